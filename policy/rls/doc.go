// Package rls reads envoyproxy/ratelimit's configuration format, unchanged,
// validates it, and matches Envoy rate limit descriptors against it as
// envoyproxy/ratelimit does. It knows neither Envoy nor gRPC: a descriptor
// is a list of Entry values, and a matched rule is a *Limit. Package rls/
// (the RateLimitService) builds on it; the floodgate command loads the
// configuration (--rls-config), reloads it and checks it
// (check-rls-config, see Check).
//
// # Format
//
// One YAML file per domain, read by Load alone or from a directory:
//
//	domain: messaging              # required, unique across the files
//	descriptors:
//	  - key: message_type          # required
//	    value: marketing           # optional; * matches any run of characters
//	    shadow_mode: false         # decide and count, but never deny
//	    detailed_metric: false     # MetricKey names every request value
//	    value_to_metric: false     # MetricKey names this entry's value
//	    share_threshold: false     # values matching this wildcard share one counter
//	    rate_limit:                # optional
//	      name: marketing          # optional, for replaces
//	      unit: day                # second, minute, hour or day (any case)
//	      requests_per_unit: 5     # 0 denies every request
//	      unlimited: false         # true: no unit, always allowed, never counted
//	      replaces:
//	        - name: other          # drop the rule named other from this request
//	    descriptors: []            # nested descriptors: the next entry
//
// Every field is that of envoyproxy/ratelimit. Unknown fields, fields in the
// wrong place, duplicate fields and values of the wrong type are errors, and
// every error in every file is reported (Errors), each with its file, line and
// field.
//
// # Matching
//
// Config.Match takes a domain and one descriptor's entries. It walks the
// descriptor tree one entry per level. At each level it takes, for the
// entry's key, the descriptor with exactly the entry's value, else the first
// in file order whose value has a * wildcard matching it, else the one with
// the key and no value. The rule is that of the descriptor reached by the
// last entry: a descriptor without rate_limit, a descriptor deeper or
// shallower than the entries, an entry that matches nothing and an unknown
// domain all give nil, no rule, which the service answers OK without
// counting (envoyproxy/ratelimit's behaviour). ApplyReplaces then drops, for
// one request, the rules that another matched rule replaces.
//
// # Differences from envoyproxy/ratelimit
//
//   - Windows: floodgate enforces at most a day, so the units week, month and
//     year that the peer accepts are errors here, and requests_per_unit is at
//     most policy.MaxLimit.
//   - Keys and values are compared as the pair they are: the peer joins
//     them with "_" and can confuse key "a_b" with key "a" and value "b".
//   - A wildcard may stand anywhere in a value and several times, as in the
//     peer's current releases; its releases before 2025 took a * only at
//     the end of a value and compared any other * literally.
//   - Fields are checked where they belong: the peer accepts any known field
//     name at any level and ignores it there (a shadow_mode under rate_limit
//     does nothing), which here is an error.
//   - A rate_limit needs requests_per_unit (the peer reads a missing one as
//     0 and denies everything) and takes none with unlimited: true (the
//     peer ignores it); unit_multiplier, which recent peer releases read, is
//     refused rather than ignored, since ignoring it would enforce a
//     shorter window than written.
//   - YAML merge keys (<<) are refused; anchors and aliases work, and the
//     YAML 1.1 booleans (yes, no, on, off) are read as the peer reads them.
//   - Several files for one domain are an error, as in the peer by default
//     (its MERGE_DOMAIN_CONFIG is not offered). A directory is read without
//     its subdirectories and dot files, which for a Kubernetes ConfigMap
//     volume are the same files again.
package rls

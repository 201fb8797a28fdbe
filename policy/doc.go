// Package policy parses, validates and matches floodgate's policy file: the
// rules that choose, per request, how it is rate limited (key, limit,
// window, strategy, tiers), an allowlist and a blocklist, and shadow rules
// that decide and count without ever denying.
//
// The package knows neither Envoy nor gRPC: requests are matched as an
// [Input] (route scope, method, path and a header lookup), and requestors
// as identity strings and addresses. Package
// [github.com/floodgate-rl/floodgate/authz] applies a [Policy] to
// CheckRequests, and the floodgate command loads the file (--policy),
// reloads it when it changes ([Watcher]) and checks it (check-policy).
//
// # Evaluation
//
// For each request floodgate:
//
//  1. finds the first rule, in file order, that matches the request and is
//     not a shadow rule ([Policy.Match]). Its key, strategy and limit apply,
//     and its scope (the rule's name unless set) names the counters. The
//     route's floodgate.* context extensions apply to whatever the rule
//     leaves unset (key, strategy), and to everything when no rule
//     matches;
//  2. works out the requestor identity under that key and the client
//     address; a requestor on the blocklist is denied (HTTP 403), else one
//     on the allowlist is allowed without being counted;
//  3. asks every matching shadow rule before that rule: each decides and
//     counts under its own scope as if it were enforcing, but never denies;
//  4. asks the rule's strategy, which allows (counting the request) or
//     denies it (HTTP 429).
//
// So a shadow rule placed in front of the rule it is meant to replace sees
// exactly the requests it would decide once its shadow flag is removed.
//
// # Format
//
// See [Parse] for the YAML format and [Policy.Lines] for the `check-policy`
// output. The grammar of the values (scopes, header names, keys, metadata
// fields, windows) is written once, in grammar.go, and read the same way by
// the flags and the context extensions: [CheckScope], [HeaderName],
// [ParseKey], [ParseMetadataField], [ParseWindow].
package policy

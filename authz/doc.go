// Package authz is floodgate's Envoy-facing translator: it implements the
// external authorization service envoy.service.auth.v3.Authorization, which
// Envoy's ext_authz HTTP filter calls for every request. It knows Envoy's
// protos and gRPC; the rate-limiting algorithm lives behind a
// limiter.Strategy, which knows neither.
//
// # Translation
//
// For each CheckRequest a Server:
//
//  1. builds a limiter.Request: the requestor identity comes from the
//     configured KeySpec (see ParseKey); Limit, Window and Scope are the
//     server defaults unless the route overrides them with context
//     extensions (below);
//  2. calls Strategy.Allow with the time from Config.Now;
//  3. turns the Decision into a CheckResponse.
//
// An allowed request gets status OK; with Config.Headers the client's
// response also carries (ok_response.response_headers_to_add)
//
//	X-RateLimit-Limit: L
//	X-RateLimit-Remaining: R
//	X-RateLimit-Reset: T
//	RateLimit-Policy: "<policy>";q=L;w=W
//	RateLimit: "<policy>";r=R;t=T
//
// where W is the window in seconds and T the seconds until the next request
// would be allowed (0 while R > 0, otherwise the Decision's RetryAfter rounded
// up, at least 1). <policy> is the scope, or "default" for the default scope.
// The RateLimit-Policy and RateLimit fields follow
// draft-ietf-httpapi-ratelimit-headers-10.
//
// A denied request gets status RESOURCE_EXHAUSTED and
// denied_response{status: 429}, whatever Config.Headers says, with the body
// "Rate limit exceeded. Try again in N seconds" and the headers
//
//	Retry-After: N
//	Content-Type: text/plain
//	X-RateLimit-Limit: L
//	X-RateLimit-Remaining: 0
//	X-RateLimit-Reset: N
//	RateLimit-Policy: "<policy>";q=L;w=W
//	RateLimit: "<policy>";r=0;t=N
//
// where N is RetryAfter rounded up to whole seconds, at least 1. Every header
// floodgate emits replaces an existing one (append_action
// OVERWRITE_IF_EXISTS_OR_ADD).
//
// # Failures
//
// Check never returns a gRPC error, because Envoy would then apply its own
// failure_mode_allow or status_on_error (403, empty body) instead of
// floodgate's. When the Strategy fails (an error, usually wrapping
// limiter.ErrStoreUnavailable), the request's deadline (Envoy's grpc-timeout)
// has already passed, or the translation panics, the Config.FailMode decides:
// FailOpen answers OK without rate-limit headers; FailClosed answers status
// UNAVAILABLE with denied_response{status: 503, body: "Rate limiter
// unavailable"}. Failures are counted and logged at most once per 10 seconds
// (with the number of failures since the previous line).
//
// # Degraded decisions
//
// A Strategy that also implements DegradedStrategy (resilient.Fallback) can
// report that it decided without the shared store, with a per-replica
// limiter. Such an answer is the usual OK or 429, and is counted as
// fallback_allowed or fallback_denied instead of allowed or denied. An
// allowed request is sent upstream with the header X-Floodgate-Degraded:
// <reason> (e.g. memcached-unavailable; ok_response.headers), whatever
// Config.Headers says, for the app and Envoy's access log. The client sees
// it, on the OK and on the 429, only with Config.DegradedHeaderToClient:
// it would tell an attacker when the limit is weaker. A value of that
// header sent by the client is removed from every request Check allows.
//
// # Dynamic metadata
//
// Every CheckResponse, allowed or denied, carries dynamic_metadata, which
// Envoy's ext_authz filter stores under MetadataNamespace
// (envoy.filters.http.ext_authz) for the filters after it and the access
// log (%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision)%): the
// scope (MetaScope), the policy rule that decided (MetaRule), the answer
// (MetaDecision: the result label of floodgate_decisions_total), the
// requests left (MetaRemaining, a number), and when so the degraded
// reason (MetaDegraded) and a shadow rule's would-deny (MetaShadow). The
// values come from the configuration and the decision, never from the
// request.
//
// # Metrics and logs of who is limited
//
// floodgate_decisions_total is counted by result, scope and rule. The
// labels are bounded (MaxLabelValues values each, the rest LabelOther;
// LabelNoRule when no rule decided) and their values come from the
// configuration only: a requestor's identity is never a label. The first
// denial of a requestor in a scope within its window is logged, once, at
// level Info ("requestor limited": scope, rule, identity as
// DisplayIdentity shows it, limit, window, retry_after), at most 10 lines
// a second, each saying how many were suppressed before it; a bounded set
// of hashes remembers who was logged.
//
// # Per-route overrides
//
// Envoy passes ExtAuthzPerRoute check_settings.context_extensions of the
// matched virtual host and route as attributes.context_extensions. floodgate
// reads:
//
//	floodgate.limit   requests per window, an integer >= 1 (ExtLimit)
//	floodgate.window  a Go duration of whole seconds, >= 1s (ExtWindow)
//	floodgate.key     a key form as for ParseKey; "xff" uses the server's
//	                  trusted hop count (ExtKey)
//	floodgate.scope   counter family and policy name, 1-64 characters of
//	                  [A-Za-z0-9_.-] (ExtScope); the default scope is ""
//	floodgate.strategy  a strategy the Server has (Config.Strategies), by
//	                  name: sliding, fixed, token-bucket, sliding-log
//	                  (ExtStrategy); the default is Config.Strategy
//
// for example
//
//	typed_per_filter_config:
//	  envoy.filters.http.ext_authz:
//	    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
//	    check_settings:
//	      context_extensions:
//	        floodgate.scope: login
//	        floodgate.limit: "10"
//	        floodgate.window: 60s
//
// An invalid value (or one longer than 512 bytes) is ignored in favour of the
// server default: it never denies a request. It is counted on every request
// in floodgate_invalid_overrides_total{name} and logged once per distinct
// (name, value). So are values valid one by one that the route's strategy
// cannot serve together (floodgate.limit 5000 with sliding-log): the limit
// is dropped first, then the window, then the strategy. Parse results of up to 1024 distinct values are remembered,
// so the hot path does not parse again; beyond that, values are parsed on
// each request and invalid ones logged at most once per 10 seconds.
//
// # Strategies
//
// A Server holds its strategies by name only, as limiter.Strategy values
// (Config.Strategy and Config.Strategies): a route or a policy rule chooses
// one by name, and the response is built from the Decision alone, whatever
// the algorithm. So X-RateLimit-Reset is, as always, RetryAfter once no
// request is left: for the fixed window, the time to the next boundary.
//
// # Policy
//
// SetPolicy installs a policy.Policy, atomically (hot reload replaces it
// whole). For each request the Server then matches the policy's rules on
// the route's scope (floodgate.scope), the method, the path and the request
// headers. Precedence: a matching rule's key, strategy, limit (or its tier's
// limit, by header) and scope win over the route's context extensions, which
// win over the server defaults; the extensions still decide what the rule
// leaves unset (key, strategy), and everything when no rule matches. The
// rule is the most specific statement about a request (it can look at its
// method, path and headers, and at the route's scope), and the policy file
// is reloaded without redeploying Envoy; if the route's values won, a policy
// could not change the limit of any route that sets floodgate.limit.
//
// The requestor identity under the chosen key, and the client address (the
// X-Forwarded-For entry under an "xff" key, else the source address), are
// then looked up in the blocklist (answered with status PERMISSION_DENIED,
// denied_response{status: 403, body: BlockedBody}, no rate-limit headers,
// counted as floodgate_decisions_total{result="blocked"}) and the allowlist
// (status OK, not counted by any strategy, result "allowlisted").
//
// Shadow rules that match before the deciding rule each decide and count
// under their own scope, but never deny: when one would have denied an
// allowed request, the response carries ShadowHeader ("X-Floodgate-Shadow:
// would-deny") and floodgate_shadow_denials_total{rule} counts it. A shadow
// decision that fails is logged and ignored.
//
// # Identities
//
// The requestor identity carries its kind so kinds never share a counter:
// "ip:203.0.113.7" (a normalised address from the source or X-Forwarded-For),
// "header:x-api-key:<value>" (any bytes, any length: the limiter hashes
// identities), "principal:spiffe://cluster.local/ns/shop/sa/web" (the
// peer's identity Envoy verified, attributes.source.principal),
// "metadata:envoy.filters.http.jwt_authn:payload.sub:<value>" (a value of
// the request's metadata_context, see MetadataValue), or FallbackIdentity
// ("unknown") for requests with no usable identity, which are all limited
// together as one requestor. Every form but source falls back to the source
// address when its value is missing.
package authz

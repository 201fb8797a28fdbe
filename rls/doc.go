// Package rls serves Envoy's rate limit service API
// (envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit, "RLS"), the
// API of Envoy's ratelimit filter, so that floodgate replaces
// envoyproxy/ratelimit with the address of one cluster changed. Like package
// authz it is a translator: it matches each descriptor of a
// RateLimitRequest against a configuration in envoyproxy/ratelimit's format
// (package policy/rls), turns the rules that apply into limiter.Request
// values, decides them all at once with limiter.MultiStrategy.AllowAll, and
// turns the decisions into a RateLimitResponse. The limiter knows nothing of
// Envoy.
//
// # Semantics
//
// For every descriptor, in order:
//
//   - a descriptor of an unknown domain, or without a rule, is unlimited:
//     status OK, limit_remaining at its maximum (2^32-1), no current_limit,
//     and nothing is counted;
//   - a rule with unlimited: true answers the same, and never touches the
//     store;
//   - a rule that another matched rule of the request replaces (replaces:
//     [{name: ...}]) is dropped from the request, and answers as unlimited;
//   - a descriptor with its own limit (Envoy's rate limit override) is
//     limited by that limit instead of the configuration's, when its unit
//     is second, minute, hour or day (times unit_multiplier, up to a day)
//     and the strategy can enforce it; otherwise the override is ignored,
//     counted in floodgate_rls_invalid_overrides_total and logged, and the
//     configuration's rule applies;
//   - a descriptor with is_negative_hits (Envoy returning hits it counted)
//     is answered OK and counts nothing: floodgate never counts a denied
//     request, so it has nothing to give back, and a client cannot buy
//     room with it;
//   - every other rule is enforced, or is a shadow rule (shadow_mode).
//
// A descriptor counts as the descriptor's own hits_addend when Envoy sends
// one, else the request's hits_addend; 0 counts as 1. A rule is a sliding
// window of its unit (with the --strategy of the command, another
// algorithm), of requests_per_unit requests; requests_per_unit 0 denies
// every request, and a request of more hits than the limit is denied
// without counting, with the whole window as its wait.
//
// All enforced rules of a request are decided in one AllowAll: the request
// is allowed if and only if every rule has room for its hits, and then it
// is counted in every rule; a denied request is counted in none, exactly
// across replicas. Shadow rules are decided after an allowed request, each
// on its own, are counted when they have room, and always answer OK; a
// shadow rule over its limit is counted in
// floodgate_rls_shadow_over_limit_total{rule}.
//
// # The answer
//
// overall_code is OK when the request is allowed, OVER_LIMIT when it is
// denied. Each status has the code of its rule (OK for a rule that had room
// even when another denied the request), current_limit (requests_per_unit,
// unit and name), limit_remaining and duration_until_reset: the seconds
// until the rule lets a request in (0 while it has room), the same N the
// ext_authz API gives. A denied request also gets raw_body
// "Rate limit exceeded. Try again in N seconds" and, in
// response_headers_to_add, Retry-After: N, N being the longest wait among
// the rules that denied it: the wait after which the request is let in.
//
// With Config.Headers, every answer also carries RateLimit-Policy and
// RateLimit (draft-ietf-httpapi-ratelimit-headers-10) of the enforced rule
// closest to its limit, named by its name or, without one, its key.
// X-RateLimit-Limit, -Remaining and -Reset are left to the ratelimit
// filter's enable_x_ratelimit_headers, which computes them from the
// statuses: sending them as well would repeat them. Shadow statuses carry
// no current_limit, so a rule being tried out changes no header.
//
// # Failures and hostile input
//
// ShouldRateLimit never returns a gRPC error. When the strategy fails (the
// store is down, the deadline passed) or the translation panics, FailOpen
// answers OK and FailClosed answers OVER_LIMIT with the body
// "Rate limiter unavailable" and no Retry-After (the ratelimit filter sends
// 429 for it: its HTTP status is the filter's rate_limited_status). A
// strategy that falls back to a per-replica limiter (resilient.Fallback)
// decides instead, and the answer carries X-Floodgate-Degraded in
// request_headers_to_add (and, with Config.DegradedHeaderToClient, in
// response_headers_to_add).
//
// A request with more than MaxDescriptors descriptors, or more than MaxRules
// rules to decide, is refused whole: OVER_LIMIT, nothing counted, a body
// that says why, counted in floodgate_rls_decisions_total{result="refused"}.
// hits_addend of any size is clamped (a request of more hits than a rule's
// limit is denied anyway), so no arithmetic overflows.
package rls

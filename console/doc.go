// Package console serves what an operator looks at when clients are being
// limited: who is limited, in which scope, and when they will be let in.
// It is served on its own listener (floodgate's --console-addr, loopback
// by default), apart from the probes and metrics of --admin-addr, because
// it shows who the clients are.
//
// Routes (all GET):
//
//	/                      the live page: decision rates, breaker and
//	                       fallback, configuration in force, top limited
//	                       requestors per scope, a lookup form (server-
//	                       rendered; /console.js only refreshes it in place)
//	/api/v1/top            ?scope=S&window=5m|1h&n=20 → Top
//	/api/v1/requestors     ?scope=S&identity=I[&limit=N&limit_window=1h] → Lookup
//	/api/v1/scopes         → {"scopes": [...], "replicas": R, "cluster_error": ""}
//	/api/v1/status         → Status
//
// scope is absent or "" for the default scope, a scope name
// (policy.CheckScope), or "rls:" and a domain for the rate limit service.
// window defaults to 5m; n to DefaultTop, at most MaxTop. identity is a
// requestor as floodgate derives it ("ip:203.0.113.7",
// "header:x-api-key:KEY") or as an operator types it (an address, or an
// API key when the scope keys on a header); at most MaxIdentityLen bytes.
// limit and limit_window override the limit looked up against, for routes
// whose floodgate.limit the console cannot know. A bad parameter is
// answered 400 with {"error": "..."} naming it; a lookup the server cannot
// make, 501; a store that fails, 503.
//
// The numbers come from elsewhere: package topk's summaries (through
// TopSource) for the top lists, a Peeker for lookups, which reads the
// deciding store without counting, and Rates for the decision rates.
package console

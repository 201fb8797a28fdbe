// Package topk keeps the requestors that floodgate denies most often, per
// scope, over the last five minutes and the last hour, in memory bounded
// whatever the number of distinct clients, so that an operator can see who
// is being limited without a metric label per requestor.
//
// The pieces, from the decision path outwards:
//
//   - Recorder.Denied is called by the translators (authz, rls) on every
//     denial. It puts the denial in a bounded queue and never blocks: a
//     full queue drops the denial and counts it. A goroutine (Run) applies
//     the queue to a Tracker in batches.
//   - Tracker keeps per scope five one-minute and twelve five-minute
//     Space-Saving summaries (Summary), rotated as the clock moves and
//     merged when read: FiveMinutes and Hour.
//   - Summary is the Space-Saving algorithm: at most Capacity entries; a
//     listed requestor's true count lies in [Count-Err, Count], one not
//     listed has at most Floor, and Floor <= N/Capacity for N denials, so
//     anyone denied more than N/Capacity times is listed. Merge combines
//     summaries (of periods, of replicas) keeping those bounds.
//   - Cluster publishes a replica's summaries to the shared store (the
//     value methods of limiter.Store: memcached) every few seconds and
//     merges every live replica's into a cluster-wide view.
//
// The package imports only the standard library and golang.org/x/time;
// it knows nothing of Envoy, gRPC or HTTP (package console serves it).
package topk

package limiter

// NewTestStore is newTestStore for the conformance test in package
// limiter_test (teststore_external_test.go).
var NewTestStore = newTestStore

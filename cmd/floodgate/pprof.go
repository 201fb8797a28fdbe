package main

import (
	"net/http"
	"net/http/pprof"
)

// withPProf returns admin, plus Go's profiler under /debug/pprof/ when on
// (--pprof): the index, cmdline, profile (CPU), symbol and trace handlers,
// and every runtime profile (heap, goroutine, allocs, block, mutex) by name
// through the index. Profiles reveal the process's internals and a CPU
// profile or trace costs CPU while it runs, so it is off by default and
// belongs only on an admin address that clients cannot reach.
func withPProf(admin http.Handler, on bool) http.Handler {
	if !on {
		return admin
	}
	mux := http.NewServeMux()
	mux.Handle("/", admin)
	mux.HandleFunc("/debug/pprof/", pprof.Index) // and the runtime profiles by name
	for name, h := range map[string]http.HandlerFunc{
		"cmdline": pprof.Cmdline, "profile": pprof.Profile, "symbol": pprof.Symbol, "trace": pprof.Trace,
	} {
		mux.HandleFunc("/debug/pprof/"+name, h)
	}
	return mux
}

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
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/", admin)
	return mux
}

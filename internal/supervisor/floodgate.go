package supervisor

import (
	"os"
	"strings"
)

// Floodgate is a floodgate server started by StartFloodgate on free
// loopback ports.
type Floodgate struct {
	*Process
	grpcPort  int
	adminPort int
}

// ServerEnv returns this process's environment without the variables whose
// names start with one of drop, and without FLOODGATE_* ones, so that the
// shell that runs a test or benchmark cannot change what its servers do.
func ServerEnv(drop ...string) []string {
	drop = append(drop, "FLOODGATE_")
	var env []string
	for _, kv := range os.Environ() {
		if !hasAnyPrefix(kv, drop) {
			env = append(env, kv)
		}
	}
	return env
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// StartFloodgate runs the floodgate binary bin with environment env (see
// ServerEnv) and --grpc-addr and --admin-addr on free 127.0.0.1 ports
// followed by args, and waits until /readyz answers 200. It tries new ports
// when another process took one first.
func StartFloodgate(bin string, env []string, args ...string) (*Floodgate, error) {
	return RetryBind(func() (*Floodgate, *Process, error) {
		gp, err := FreePort()
		if err != nil {
			return nil, nil, err
		}
		ap, err := FreePort()
		if err != nil {
			return nil, nil, err
		}
		f := &Floodgate{grpcPort: gp, adminPort: ap}
		all := append([]string{"--grpc-addr", f.GRPCAddr(), "--admin-addr", f.AdminAddr()}, args...)
		p, err := Start("floodgate", env, bin, all...)
		if err != nil {
			return nil, nil, err
		}
		f.Process = p
		if err := WaitHTTP(p, f.AdminURL()+"/readyz"); err != nil {
			p.Stop()
			return nil, p, err
		}
		return f, p, nil
	})
}

// GRPCAddr returns the address of floodgate's gRPC server,
// "127.0.0.1:PORT".
func (f *Floodgate) GRPCAddr() string { return Loopback(f.grpcPort) }

// GRPCPort returns the port of floodgate's gRPC server.
func (f *Floodgate) GRPCPort() int { return f.grpcPort }

// AdminAddr returns the address of floodgate's admin server,
// "127.0.0.1:PORT".
func (f *Floodgate) AdminAddr() string { return Loopback(f.adminPort) }

// AdminURL returns the base URL of floodgate's admin server,
// "http://127.0.0.1:PORT".
func (f *Floodgate) AdminURL() string { return "http://" + f.AdminAddr() }

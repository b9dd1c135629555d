package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/ttftlab/ttftlab/coordinator"
)

// httpAddrFlag registers --http, the live dashboard's address.
func httpAddrFlag(fs *flag.FlagSet) *string {
	return fs.String("http", "", "serve the live dashboard (runs in progress, updated every second) and the past runs' report.html on this `host:port`, such as 127.0.0.1:8080 (empty: off); a non-loopback address needs --token-file or --tls-dir")
}

// startDashboard serves the dashboard on addr for the results under out and
// adds it to cfg's observers. stop closes it and waits for its server.
func startDashboard(addr, out, token string, tlsConfig *tls.Config, cfg *coordinator.Config, stderr io.Writer, logger *slog.Logger) (stop func(), err error) {
	if err := coordinator.CheckDashboardAddr(addr, token != "", tlsConfig != nil); err != nil {
		return nil, err
	}
	d, err := coordinator.NewDashboard(coordinator.DashboardConfig{OutDir: out, Token: token, Logger: logger})
	if err != nil {
		return nil, err
	}
	url, stop, err := coordinator.ServeDashboard(addr, d, tlsConfig, logger)
	if err != nil {
		d.Close()
		return nil, err
	}
	cfg.Observer = coordinator.Observers(cfg.Observer, d)
	if token != "" {
		url += "?token=" + token
	}
	fmt.Fprintf(stderr, "dashboard: %s\n", url)
	return stop, nil
}

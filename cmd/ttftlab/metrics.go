package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ttftlab/ttftlab/internal/metrics"
)

// metricsAddrFlag registers a daemon's --metrics-addr.
func metricsAddrFlag(fs *flag.FlagSet) *string {
	return fs.String("metrics-addr", "", "serve Prometheus /metrics on this `host:port`, such as 127.0.0.1:9090 (empty: off); it has no authentication, so bind it to loopback or to an address only the scraper reaches")
}

// checkMetricsAddr checks --metrics-addr before anything starts.
func checkMetricsAddr(addr string) error {
	if addr == "" {
		return nil
	}
	return metrics.CheckAddr(addr)
}

// serveMetrics serves reg on addr, when addr is set, until the returned
// stop is called; stop waits for the listener's goroutine.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, logger *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	s, err := metrics.Serve(ctx, addr, reg, logger)
	if err != nil {
		return nil, err
	}
	return func() {
		if err := s.Close(); err != nil {
			logger.Warn("metrics listener", "err", err)
		}
	}, nil
}

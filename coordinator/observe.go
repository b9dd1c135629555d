package coordinator

// Observer watches the coordinator's runs live, for example to export them
// as metrics (internal/metrics). RunEvent is called with each event of a
// run after it was appended to the run's log, from the goroutine that
// recorded it (so concurrently for a sweep's agents), with the payload as
// recorded: results.SweepInterval, *pb.IntervalReport, results.LevelStart,
// results.RunEnd and so on. Samples are not passed on. RunEvent must be safe
// for concurrent use and must not block: it runs on the path that records
// the agents' reports.
type Observer interface {
	RunEvent(runID, kind string, payload any)
}

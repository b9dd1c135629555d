//go:build linux && !race

package oai

// raceBuild says whether this is a race-detector build (whose annotations
// allocate).
const raceBuild = false

// raceAcquireIO does nothing outside race builds; see rxts_race_linux.go.
func raceAcquireIO(uintptr) {}

//go:build !linux

package oai

import "testing"

// warmRx does nothing: there are no kernel receive timestamps here.
func warmRx(*testing.T) {}

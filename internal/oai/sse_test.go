package oai

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readLines(t *testing.T, l *lineReader) ([]string, error) {
	t.Helper()
	var lines []string
	for {
		b, at, err := l.next()
		if err != nil {
			return lines, err
		}
		if at.IsZero() {
			t.Fatalf("line %q has no arrival time", b)
		}
		lines = append(lines, string(b))
	}
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 3<<20)
	in := "a\r\n\n" + long + "\nb\nlast"
	l := getLineReader(iotest.HalfReader(strings.NewReader(in)), 8<<20)
	defer l.put()
	lines, err := readLines(t, l)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("err %v, want EOF", err)
	}
	want := []string{"a\r\n", "\n", long + "\n", "b\n", "last"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d", len(lines), len(want))
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d = %.20q (%d bytes), want %.20q (%d bytes)", i, lines[i], len(lines[i]), want[i], len(want[i]))
		}
	}
	if len(l.buf) != readerSize {
		t.Errorf("buffer is %d bytes after the long line, want back to %d", len(l.buf), readerSize)
	}
}

func TestLineReaderLimit(t *testing.T) {
	l := getLineReader(strings.NewReader(strings.Repeat("y", 100<<10)+"\n"), 64<<10)
	defer l.put()
	_, err := readLines(t, l)
	var tooLong errLineTooLong
	if !errors.As(err, &tooLong) {
		t.Fatalf("err %v, want errLineTooLong", err)
	}
}

// BenchmarkLongLine reads one 4 MiB SSE line: a long line costs time linear
// in its length.
func BenchmarkLongLine(b *testing.B) {
	in := strings.Repeat("z", 4<<20) + "\n"
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		l := getLineReader(strings.NewReader(in), 8<<20)
		if line, _, err := l.next(); err != nil || len(line) != len(in) {
			b.Fatal(err)
		}
		l.put()
	}
}

package oai

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"
)

// lineReader splits a response body into lines. It reads into a small
// buffer that grows only while a line longer than it is read, and goes back
// to the small buffer once that line is consumed, so an open stream holds
// readerSize bytes however long its longest line was. It also remembers when
// its last read returned: a line is stamped with the arrival of the read
// that completed it, so lines that arrived together share one time and the
// parsing of earlier lines never delays a later line's stamp. When the body
// knows when its bytes came off the socket (the h1 transport: an
// arrivalClock), that time is used instead of the time the body's Read
// returned, so neither TLS decryption nor chunk framing is counted.
//
// A lineReader is not safe for concurrent use; readers are pooled.
type lineReader struct {
	rd    io.Reader
	clock arrivalClock // rd's arrival stamps; nil when it has none
	// kclock says whether rd's stamps are kernel receive timestamps;
	// nil when it cannot.
	kclock kernelClock
	buf    []byte // small, or a larger buffer while a long line is read
	small  []byte
	r, w   int
	at     time.Time
	// kernel says whether at is a kernel receive timestamp.
	kernel bool
	err    error
	max    int // longest line accepted, end-of-line included

	// preview backs the stream's Result.Preview bytes.
	preview [previewBytes + utf8.UTFMax]byte
}

// arrivalClock is a body that knows when the bytes its last Read returned
// arrived: the time the socket read that brought them returned.
type arrivalClock interface {
	arrived() time.Time
}

// kernelClock is an arrivalClock that can say whether its last stamp was
// the kernel's receive timestamp.
type kernelClock interface {
	arrivedKernel() bool
}

var lineReaders = sync.Pool{New: func() any {
	l := &lineReader{small: make([]byte, readerSize)}
	l.buf = l.small
	return l
}}

// getLineReader returns a pooled reader for rd that accepts lines of at
// most maxLine bytes.
func getLineReader(rd io.Reader, maxLine int) *lineReader {
	l := lineReaders.Get().(*lineReader)
	l.rd, l.max = rd, maxLine
	l.clock, _ = rd.(arrivalClock)
	l.kclock, _ = rd.(kernelClock)
	return l
}

// put returns l to the pool.
func (l *lineReader) put() {
	l.rd, l.clock, l.kclock, l.err, l.at, l.kernel = nil, nil, nil, nil, time.Time{}, false
	l.buf, l.r, l.w = l.small, 0, 0
	lineReaders.Put(l)
}

// errLineTooLong is returned by next for a line longer than the limit.
type errLineTooLong int

func (e errLineTooLong) Error() string { return fmt.Sprintf("SSE line longer than %d bytes", int(e)) }

// next returns the next line, end of line included (a last line before a
// clean io.EOF may lack it), and the time the read that completed it returned. The line is valid
// until the next call. At the end of the body it returns the read error
// (io.EOF for a clean end).
func (l *lineReader) next() ([]byte, time.Time, error) {
	scanned := 0 // bytes of buf[r:w] known to hold no newline
	for {
		if i := bytes.IndexByte(l.buf[l.r+scanned:l.w], '\n'); i >= 0 {
			end := l.r + scanned + i + 1
			if end-l.r > l.max {
				return nil, l.at, errLineTooLong(l.max)
			}
			line := l.buf[l.r:end]
			l.r = end
			return line, l.at, nil
		}
		scanned = l.w - l.r
		if scanned >= l.max {
			return nil, l.at, errLineTooLong(l.max)
		}
		if l.err != nil {
			// A last line without its end of line counts only at a
			// clean end of the body: after a broken read it is a
			// fragment, and the error is what happened.
			if l.r < l.w && l.err == io.EOF {
				line := l.buf[l.r:l.w]
				l.r = l.w
				return line, l.at, nil
			}
			return nil, l.at, l.err
		}
		l.makeRoom()
		n, err := l.rd.Read(l.buf[l.w:])
		if n > 0 {
			l.at, l.kernel = l.arrival()
		} else if err == nil {
			continue
		}
		l.w += n
		l.err = err
	}
}

// arrival returns when the bytes of the read that just returned arrived:
// the body's own stamp when it has one, else now; kernel says whether that
// is the kernel's receive timestamp.
func (l *lineReader) arrival() (at time.Time, kernel bool) {
	if l.clock != nil {
		if at := l.clock.arrived(); !at.IsZero() {
			return at, l.kclock != nil && l.kclock.arrivedKernel()
		}
	}
	return time.Now(), false
}

// makeRoom moves the unread bytes to the front of the buffer, going back to
// the small buffer when they fit in it and growing the buffer when it is
// full.
func (l *lineReader) makeRoom() {
	n := l.w - l.r
	switch {
	case len(l.buf) > len(l.small) && n <= len(l.small)/2:
		copy(l.small, l.buf[l.r:l.w])
		l.buf = l.small
	case n == len(l.buf):
		// Doubling keeps a long line's cost linear in its length.
		nb := make([]byte, max(2*len(l.buf), readerSize))
		copy(nb, l.buf[l.r:l.w])
		l.buf = nb
	case l.r > 0:
		copy(l.buf, l.buf[l.r:l.w])
	}
	l.r, l.w = 0, n
}

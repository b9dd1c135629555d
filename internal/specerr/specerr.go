// Package specerr is the error type of spec validation: an error that names
// the spec field at fault, so that a front end (the CLI's flags, a gRPC
// client's request fields) can name the field the way its user wrote it.
package specerr

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError says that one field of a spec is invalid.
type FieldError struct {
	// Field is the field's path in the spec, for example "load.concurrency".
	Field string
	// Value is the offending value as text; "" when the field is missing
	// or the rule spans several fields.
	Value string
	// Reason says what is wrong and the fix, and reads on from the value:
	// for example "is invalid: set concurrency ≥ 1".
	Reason string
	// Refs are other fields the reason names, each written "{field}" in
	// it, so that a front end shows them under its own names too (see
	// Refer).
	Refs []string
}

// New returns a FieldError for field with value v (nil for none) and the
// reason in format and args.
func New(field string, v any, format string, args ...any) *FieldError {
	e := &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
	if v != nil {
		e.Value = fmt.Sprint(v)
	}
	return e
}

// Error renders "field value reason", or "field reason" without a value:
// for example "load.concurrency 0 is invalid: set concurrency ≥ 1".
func (e *FieldError) Error() string { return e.render(e.Field, nil) }

// Refer records that the reason names the other fields given, each written
// "{field}" in it: for example New("slo_ttft_ms", 900, "is above
// {max_ttft_ms} %g", 500).Refer("max_ttft_ms") renders "slo_ttft_ms 900 is
// above max_ttft_ms 500", and under a CLI's names "--slo-ttft-ms 900 is
// above --max-ttft-ms 500".
func (e *FieldError) Refer(fields ...string) *FieldError {
	e.Refs = append(e.Refs, fields...)
	return e
}

// render writes the error under name, with each referred field under the
// name that names returns (nil, or ok false: the spec's field name).
func (e *FieldError) render(name string, names func(string) (string, bool)) string {
	reason := e.Reason
	for _, f := range e.Refs {
		n := f
		if names != nil {
			if v, ok := names(f); ok {
				n = v
			}
		}
		reason = strings.ReplaceAll(reason, "{"+f+"}", n)
	}
	if e.Value == "" {
		return name + " " + reason
	}
	return name + " " + e.Value + " " + reason
}

// Renamed is a FieldError shown under a front end's name for its field (a
// flag such as --concurrency). It unwraps to the FieldError.
type Renamed struct {
	Name string
	*FieldError
	// names renames the fields the reason refers to.
	names func(string) (string, bool)
}

// Error renders the FieldError with Name in place of its field.
func (r *Renamed) Error() string { return r.render(r.Name, r.names) }

// Unwrap returns the FieldError.
func (r *Renamed) Unwrap() error { return r.FieldError }

// Rename rewrites the FieldErrors in err under the names that name returns
// (ok false keeps the spec's field name). A joined error (errors.Join) is
// rewritten member by member; otherwise the first FieldError found in err's
// chain replaces err's whole message, dropping wrapping prefixes that speak
// of the spec rather than of the front end. Errors without a FieldError are
// returned unchanged.
func Rename(err error, name func(field string) (string, bool)) error {
	if err == nil {
		return nil
	}
	if errs := joined(err); errs != nil {
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = Rename(e, name)
		}
		return errors.Join(out...)
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		return err
	}
	if n, ok := name(fe.Field); ok {
		return &Renamed{Name: n, FieldError: fe, names: name}
	}
	return err
}

// joined returns the members of an errors.Join error, or nil for any other
// error (fmt.Errorf with several %w unwraps to several errors too, but its
// message is not theirs joined by newlines).
func joined(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return nil
	}
	errs := j.Unwrap()
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	if strings.Join(msgs, "\n") != err.Error() {
		return nil
	}
	return errs
}

// Table returns a name function for Rename from a map of spec field names to
// front-end names. A field missing from the map whose parent is in it (for
// "workload.generator.input_len.mean", a map entry "workload.generator")
// takes the parent's name.
func Table(m map[string]string) func(string) (string, bool) {
	return func(field string) (string, bool) {
		for f := field; f != ""; {
			if n, ok := m[f]; ok {
				return n, true
			}
			i := strings.LastIndexByte(f, '.')
			if i < 0 {
				break
			}
			f = f[:i]
		}
		return "", false
	}
}

package main

import (
	"bytes"
	"errors"
	"flag"
	"regexp"
	"strings"
	"testing"
)

// flagEntry is one flag in PrintDefaults' output: "  -name type" and the
// indented usage lines below it.
var flagEntry = regexp.MustCompile(`(?m)^  -\S+.*\n(?:    .*\n?)*`)

// TestEveryCommandHasHelp runs `ttftlab X --help` for every registered
// command: the help opens with the command's one-line description, then
// its usage, never with Go's "Usage of X:", and no flag states its default
// twice (once in its usage string, once as the flag package's "(default x)").
func TestEveryCommandHasHelp(t *testing.T) {
	cmds := commands()
	if len(cmds) < 15 {
		t.Fatalf("%d commands registered, want at least 15", len(cmds))
	}
	for _, c := range cmds {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{c.name, "--help"}, &stdout, &stderr)
			if err != nil && !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("--help: %v", err)
			}
			help := stdout.String() + stderr.String()
			first, rest, _ := strings.Cut(help, "\n")
			if first != c.summary {
				t.Errorf("first line %q, want the summary %q", first, c.summary)
			}
			if !strings.HasSuffix(c.summary, ".") || strings.Contains(c.summary, "\n") || len(c.summary) > 100 {
				t.Errorf("summary %q is not one short sentence", c.summary)
			}
			if !strings.HasPrefix(rest, "\nUsage: "+c.usage+"\n") || !strings.HasPrefix(c.usage, "ttftlab "+c.name) {
				t.Errorf("help does not give the usage %q after the summary:\n%s", c.usage, help)
			}
			if strings.Contains(help, "panic calling") {
				t.Errorf("a flag's String panicked on its zero value (flag.PrintDefaults recovers and prints it):\n%s", help)
			}
			if strings.Contains(help, "Usage of") {
				t.Errorf("help has Go's default %q:\n%s", "Usage of", help)
			}
			_, flags, _ := strings.Cut(help, "\nFlags:\n")
			for _, e := range flagEntry.FindAllString(flags, -1) {
				if strings.Contains(e, "(default ") && strings.Count(strings.ToLower(e), "default") > 1 {
					t.Errorf("flag states its default twice:\n%s", e)
				}
			}
		})
	}
}

func TestCommandList(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, nil} {
		t.Run(strings.Join(append([]string{"ttftlab"}, args...), " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), args, &stdout, &stderr)
			if args == nil {
				if err == nil || !strings.Contains(err.Error(), "no command given") {
					t.Errorf("bare ttftlab: %v, want an error saying no command was given", err)
				}
			} else if err != nil {
				t.Errorf("err = %v", err)
			}
			out := stdout.String() + stderr.String()
			for _, c := range commands() {
				if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(c.name) + ` +` + regexp.QuoteMeta(c.summary) + `$`).MatchString(out) {
					t.Errorf("the list lacks %q with its summary:\n%s", c.name, out)
				}
			}
		})
	}
}

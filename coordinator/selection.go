package coordinator

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/specerr"
)

// Selection picks the gpunode(s) and agents of a run. Every experiment's
// spec embeds one; the zero Selection means any one gpunode and any agents.
// At most one of GPUNode, Selector and All narrows the gpunodes (All may
// be combined with Selector: every gpunode that matches).
type Selection struct {
	// GPUNode names one gpunode (its --name).
	GPUNode string `json:"gpunode,omitempty"`
	// Selector picks gpunodes whose labels have every key with its value.
	Selector map[string]string `json:"selector,omitempty"`
	// All asks for every (matching) gpunode; only experiments that run a
	// fleet accept it.
	All bool `json:"all_gpunodes,omitempty"`
	// AgentsSelector restricts the agents the run may lease.
	AgentsSelector map[string]string `json:"agents_selector,omitempty"`
}

// SelectionFromProto returns the selection a request carries; nil is the
// zero Selection.
func SelectionFromProto(p *pb.Selection) Selection {
	s := Selection{GPUNode: p.GetGpunode(), All: p.GetAllGpunodes()}
	if len(p.GetSelector()) > 0 {
		s.Selector = maps.Clone(p.GetSelector())
	}
	if len(p.GetAgentsSelector()) > 0 {
		s.AgentsSelector = maps.Clone(p.GetAgentsSelector())
	}
	return s
}

// Proto returns the selection as it travels in a Run*Request; nil for the
// zero Selection.
func (s Selection) Proto() *pb.Selection {
	if s.IsZero() {
		return nil
	}
	return &pb.Selection{Gpunode: s.GPUNode, Selector: maps.Clone(s.Selector), AllGpunodes: s.All, AgentsSelector: maps.Clone(s.AgentsSelector)}
}

// IsZero reports whether s selects anything at all.
func (s Selection) IsZero() bool {
	return s.GPUNode == "" && len(s.Selector) == 0 && !s.All && len(s.AgentsSelector) == 0
}

// Validate checks the selection. allowAll is whether the experiment runs
// on several gpunodes at once; the errors are specerr.FieldErrors under
// selection.*, which the CLI renames to its flags.
func (s Selection) Validate(allowAll bool) error {
	var errs []error
	if s.GPUNode != "" {
		// A member name is what memberlist accepted; keep it printable.
		if len(s.GPUNode) > 256 || strings.ContainsFunc(s.GPUNode, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			errs = append(errs, specerr.New("selection.gpunode", fmt.Sprintf("%q", s.GPUNode), "is not a node name: use the NAME that `ttftlab members` lists"))
		}
		if len(s.Selector) > 0 {
			errs = append(errs, specerr.New("selection.gpunode", fmt.Sprintf("%q", s.GPUNode), "and a gpunode selector were both given: name one gpunode or select by labels, not both"))
		}
		if s.All {
			errs = append(errs, specerr.New("selection.gpunode", fmt.Sprintf("%q", s.GPUNode), "and all gpunodes were both asked for: drop one of the two"))
		}
	}
	if s.All && !allowAll {
		errs = append(errs, specerr.New("selection.all_gpunodes", nil, "is not supported by this experiment, which runs on one gpunode: pick one with a gpunode name or a selector"))
	}
	if err := membership.ValidateLabels(s.Selector); err != nil {
		errs = append(errs, specerr.New("selection.selector", fmt.Sprintf("%q", membership.FormatLabels(s.Selector)), "is not a valid selector: %v", err))
	}
	if err := membership.ValidateLabels(s.AgentsSelector); err != nil {
		errs = append(errs, specerr.New("selection.agents_selector", fmt.Sprintf("%q", membership.FormatLabels(s.AgentsSelector)), "is not a valid selector: %v", err))
	}
	return errors.Join(errs...)
}

// gpuMatches reports whether gpunode m is one s may run on.
func (s Selection) gpuMatches(m membership.Member) bool {
	if s.GPUNode != "" && m.Name != s.GPUNode {
		return false
	}
	return membership.Matches(m.Labels, s.Selector)
}

// agentMatches reports whether agent m is one s may lease.
func (s Selection) agentMatches(m membership.Member) bool {
	return membership.Matches(m.Labels, s.AgentsSelector)
}

// describeGPUs says which gpunodes s asks for, for messages.
func (s Selection) describeGPUs() string {
	switch {
	case s.GPUNode != "":
		return "gpunode " + s.GPUNode
	case len(s.Selector) > 0 && s.All:
		return "every gpunode matching selector " + membership.FormatLabels(s.Selector)
	case len(s.Selector) > 0:
		return "a gpunode matching selector " + membership.FormatLabels(s.Selector)
	case s.All:
		return "every gpunode"
	}
	return "a gpunode"
}

// matching returns the members of role that pass match.
func matching(ms []membership.Member, role membership.Role, match func(membership.Member) bool) []membership.Member {
	var out []membership.Member
	for _, m := range membership.ByRole(ms, role) {
		if match(m) {
			out = append(out, m)
		}
	}
	return out
}

// noMatchError explains, after the discovery timeout, why a selection
// found no member: it names the selection and what does exist (the known
// gpunode names for a name, the labels in view for a selector), so that
// the fix is in the message.
func (s Selection) noMatchError(ms []membership.Member, needGPU bool, waited string) error {
	gpus := membership.ByRole(ms, membership.RoleGPUNode)
	agents := membership.ByRole(ms, membership.RoleAgent)
	var problems []string
	if needGPU && len(matching(ms, membership.RoleGPUNode, s.gpuMatches)) == 0 {
		switch {
		case len(gpus) == 0:
			problems = append(problems, "no gpunode is in the cluster: start one with `ttftlab gpunode --join ADDR`")
		case s.GPUNode != "":
			problems = append(problems, fmt.Sprintf("no gpunode is named %q; the gpunodes are: %s", s.GPUNode, strings.Join(names(gpus), ", ")))
		default:
			problems = append(problems, fmt.Sprintf("no gpunode matches selector %s; the gpunodes' labels are: %s", membership.FormatLabels(s.Selector), describeLabels(gpus)))
		}
	}
	if len(matching(ms, membership.RoleAgent, s.agentMatches)) == 0 {
		switch {
		case len(agents) == 0:
			problems = append(problems, "no agent is in the cluster: start one with `ttftlab agent --join ADDR`")
		default:
			problems = append(problems, fmt.Sprintf("no agent matches agents selector %s; the agents' labels are: %s", membership.FormatLabels(s.AgentsSelector), describeLabels(agents)))
		}
	}
	if len(problems) == 0 {
		problems = append(problems, "the members it needs left while it waited")
	}
	return fmt.Errorf("after %s: %s", waited, strings.Join(problems, "; "))
}

func names(ms []membership.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

// describeLabels lists each member with its labels, "name{k=v,...}".
func describeLabels(ms []membership.Member) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.Name + "{" + membership.FormatLabels(m.Labels) + "}"
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

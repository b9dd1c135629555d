package main

import (
	"flag"
	"maps"

	"github.com/ttftlab/ttftlab/coordinator"
	"github.com/ttftlab/ttftlab/internal/membership"
)

// registerSelectionFlags binds --gpunode, --selector, --all-gpunodes and
// --agents-selector to sel, for every command that runs an experiment on a
// cluster. The rules (one of --gpunode and --selector, --all-gpunodes only
// where the experiment runs a fleet) are coordinator.Selection.Validate's;
// selectionFlagNames names the flags in its errors.
func registerSelectionFlags(fs *flag.FlagSet, sel *coordinator.Selection) {
	fs.StringVar(&sel.GPUNode, "gpunode", "", "run on the gpunode of this `NAME` (see ttftlab members; default: any free gpunode)")
	fs.Var(selectorFlag{&sel.Selector}, "selector", "run on a gpunode whose labels match `k=v[,k=v]`, e.g. gpu=NVIDIA-H200 (see ttftlab members)")
	fs.BoolVar(&sel.All, "all-gpunodes", false, "run on every (matching) gpunode; only fleet experiments accept it")
	fs.Var(selectorFlag{&sel.AgentsSelector}, "agents-selector", "lease only agents whose labels match `k=v[,k=v]` (default: any free agent)")
}

// selectionFlagNames maps Selection's spec fields to the flags above.
func selectionFlagNames() flagNames {
	return flagNames{
		"selection.gpunode": "--gpunode", "selection.selector": "--selector",
		"selection.all_gpunodes": "--all-gpunodes", "selection.agents_selector": "--agents-selector",
	}
}

// withSelectionNames returns names with the selection flags added.
func withSelectionNames(names flagNames) flagNames {
	out := maps.Clone(names)
	maps.Copy(out, selectionFlagNames())
	return out
}

// selectorFlag reads a label selector, k=v[,k=v].
type selectorFlag struct{ m *map[string]string }

func (f selectorFlag) String() string {
	if f.m == nil {
		return ""
	}
	return membership.FormatLabels(*f.m)
}

func (f selectorFlag) Set(s string) error {
	sel, err := membership.ParseSelector(s)
	if err != nil {
		return err
	}
	*f.m = sel
	return nil
}

// labelsFlag collects repeated --label k=v flags of a daemon.
type labelsFlag map[string]string

func (l labelsFlag) String() string { return membership.FormatLabels(l) }

func (l labelsFlag) Set(s string) error {
	k, v, err := membership.ParseLabel(s)
	if err != nil {
		return err
	}
	l[k] = v
	return nil
}

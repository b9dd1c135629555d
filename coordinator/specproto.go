package coordinator

import (
	"math"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// This file holds the one conversion per direction between each
// experiment's spec and its RunXRequest: XSpecFromProto for the gRPC
// handlers (server.go), Request for the clients (the CLI with
// --coordinator). TestSpecRequestRoundTrip fills every spec field and
// checks spec → request → spec, so a field added to one side only fails it.
// SweepSpec.Request and BaselineSpec.Request sit next to their types.

// SweepSpecFromProto returns the spec a RunSweep request asks for, before
// defaults and validation.
func SweepSpecFromProto(req *pb.RunSweepRequest) SweepSpec {
	return SweepSpec{
		RunID: req.GetRunId(), OutDir: req.GetOutDir(), Profile: req.GetProfile(), Knobs: req.GetKnobs(), BaseURL: req.GetBaseUrl(),
		Model: req.GetModel(), API: req.GetApi(), Load: req.GetLoad(), Levels: req.GetLevels(), Workload: req.GetWorkload(),
		Generator: req.GetGenerator(), AgentLoss: req.GetAgentLoss(), MaxAgents: int(req.GetMaxAgents()),
		AutoDuration: req.GetAutoDuration(), MaxDuration: msSaturated(req.GetMaxDurationMs()),
		Selection:   SelectionFromProto(req.GetSelection()),
		TargetCAPEM: req.GetTargetCaPem(), TargetInsecureSkipVerify: req.GetTargetInsecureSkipVerify(),
		TargetTransport: req.GetTargetTransport(), TargetFirstTokenClock: req.GetTargetFirstTokenClock(),
	}
}

// BaselineSpecFromProto returns the spec a RunBaseline request asks for,
// before defaults and validation.
func BaselineSpecFromProto(req *pb.RunBaselineRequest) BaselineSpec {
	return BaselineSpec{
		Profile: req.GetProfile(), Knobs: req.GetKnobs(), Prompt: req.GetPrompt(), MaxTokens: int(req.GetMaxTokens()),
		WarmRuns: int(req.GetWarmRuns()), API: req.GetApi(), ColdMode: req.GetColdMode(), OutDir: req.GetOutDir(), RunID: req.GetRunId(),
		Repeats: int(req.GetRepeats()), Selection: SelectionFromProto(req.GetSelection()),
	}
}

// KVScaleSpecFromProto returns the spec a RunKVScale request asks for,
// before defaults and validation.
func KVScaleSpecFromProto(req *pb.RunKVScaleRequest) KVScaleSpec {
	return KVScaleSpec{
		RunID: req.GetRunId(), OutDir: req.GetOutDir(), Profile: req.GetProfile(), Knobs: req.GetKnobs(), API: req.GetApi(),
		MaxModelLens: int32s(req.GetMaxModelLens()), Utilizations: req.GetGpuMemoryUtilizations(),
		MaxNumSeqs: int(req.GetMaxNumSeqs()), OutputLen: int(req.GetOutputLen()),
		LevelDuration: msSaturated(req.GetLevelDurationMs()), Warmup: msSaturated(req.GetWarmupMs()),
		MaxConcurrency: int(req.GetMaxConcurrency()), MaxAgents: int(req.GetMaxAgents()),
		Selection: SelectionFromProto(req.GetSelection()),
	}
}

// Request returns the spec as the coordinator's RunKVScale request, the
// form in which a client sends it.
func (s KVScaleSpec) Request() *pb.RunKVScaleRequest {
	return &pb.RunKVScaleRequest{
		RunId: s.RunID, OutDir: s.OutDir, Profile: s.Profile, Knobs: s.Knobs, Api: s.API,
		MaxModelLens: narrow(s.MaxModelLens), GpuMemoryUtilizations: s.Utilizations,
		MaxNumSeqs: int32(s.MaxNumSeqs), OutputLen: int32(s.OutputLen),
		LevelDurationMs: s.LevelDuration.Milliseconds(), WarmupMs: s.Warmup.Milliseconds(),
		MaxConcurrency: int32(s.MaxConcurrency), MaxAgents: int32(s.MaxAgents),
		Selection: s.Selection.Proto(),
	}
}

// PrefixSpecFromProto returns the spec a RunPrefix request asks for, before
// defaults and validation.
func PrefixSpecFromProto(req *pb.RunPrefixRequest) PrefixSpec {
	return PrefixSpec{
		RunID: req.GetRunId(), OutDir: req.GetOutDir(), Profile: req.GetProfile(), Knobs: req.GetKnobs(), API: req.GetApi(),
		PrefixLens: int32s(req.GetPrefixLens()), SuffixLen: int(req.GetSuffixLen()), HitRatios: req.GetHitRatios(),
		HitPrefixLen: int(req.GetHitPrefixLen()), Concurrency: int(req.GetConcurrency()), Repeats: int(req.GetRepeats()),
		OutputLen: int(req.GetOutputLen()), LevelDuration: msSaturated(req.GetLevelDurationMs()), Warmup: msSaturated(req.GetWarmupMs()),
		SkipOff: req.GetSkipOff(), MaxAgents: int(req.GetMaxAgents()), Selection: SelectionFromProto(req.GetSelection()),
	}
}

// Request returns the spec as the coordinator's RunPrefix request, the form
// in which a client sends it.
func (s PrefixSpec) Request() *pb.RunPrefixRequest {
	return &pb.RunPrefixRequest{
		RunId: s.RunID, OutDir: s.OutDir, Profile: s.Profile, Knobs: s.Knobs, Api: s.API,
		PrefixLens: narrow(s.PrefixLens), SuffixLen: int32(s.SuffixLen), HitRatios: s.HitRatios,
		HitPrefixLen: int32(s.HitPrefixLen), Concurrency: int32(s.Concurrency), Repeats: int32(s.Repeats),
		OutputLen: int32(s.OutputLen), LevelDurationMs: s.LevelDuration.Milliseconds(), WarmupMs: s.Warmup.Milliseconds(),
		SkipOff: s.SkipOff, MaxAgents: int32(s.MaxAgents), Selection: s.Selection.Proto(),
	}
}

// PresetsSpecFromProto returns the spec a RunPresets request asks for,
// before defaults and validation.
func PresetsSpecFromProto(req *pb.RunPresetsRequest) PresetsSpec {
	return PresetsSpec{
		RunID: req.GetRunId(), OutDir: req.GetOutDir(), Profile: req.GetProfile(), Knobs: req.GetKnobs(), API: req.GetApi(),
		MaxNumBatchedTokens: int32s(req.GetMaxNumBatchedTokens()), MaxNumSeqs: int32s(req.GetMaxNumSeqs()),
		ChunkedPrefill: req.GetChunkedPrefill(), Concurrencies: int32s(req.GetConcurrencies()), MaxModelLen: int(req.GetMaxModelLen()),
		InputLen: int(req.GetInputLen()), OutputLen: int(req.GetOutputLen()), SLOTTFTMs: req.GetSloTtftMs(), MaxTTFTMs: req.GetMaxTtftMs(),
		LevelDuration: msSaturated(req.GetLevelDurationMs()), Warmup: msSaturated(req.GetWarmupMs()),
		MaxAgents: int(req.GetMaxAgents()), Selection: SelectionFromProto(req.GetSelection()),
	}
}

// Request returns the spec as the coordinator's RunPresets request, the
// form in which a client sends it.
func (s PresetsSpec) Request() *pb.RunPresetsRequest {
	return &pb.RunPresetsRequest{
		RunId: s.RunID, OutDir: s.OutDir, Profile: s.Profile, Knobs: s.Knobs, Api: s.API,
		MaxNumBatchedTokens: narrow(s.MaxNumBatchedTokens), MaxNumSeqs: narrow(s.MaxNumSeqs),
		ChunkedPrefill: s.ChunkedPrefill, Concurrencies: narrow(s.Concurrencies), MaxModelLen: int32(s.MaxModelLen),
		InputLen: int32(s.InputLen), OutputLen: int32(s.OutputLen), SloTtftMs: s.SLOTTFTMs, MaxTtftMs: s.MaxTTFTMs,
		LevelDurationMs: s.LevelDuration.Milliseconds(), WarmupMs: s.Warmup.Milliseconds(),
		MaxAgents: int32(s.MaxAgents), Selection: s.Selection.Proto(),
	}
}

// int32s widens a repeated int32 field; nil stays nil (the default).
func int32s(v []int32) []int {
	if v == nil {
		return nil
	}
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// narrow is int32s' inverse for a spec's list; nil stays nil. A value
// beyond int32 is held at its end, so that the coordinator's Validate
// rejects it instead of a wrapped-around value.
func narrow(v []int) []int32 {
	if v == nil {
		return nil
	}
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(min(max(x, math.MinInt32), math.MaxInt32))
	}
	return out
}

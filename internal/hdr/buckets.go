package hdr

// Buckets calls fn for each non-empty bucket of h, from the lowest values
// up, with the bucket's lowest and highest equivalent values in
// microseconds and its count. It lets a reader rebuild the distribution in
// another bucketing (a Prometheus native histogram) with counts, without
// replaying every value.
func (h *Histogram) Buckets(fn func(lowUs, highUs, count int64)) {
	if h == nil || h.Count() == 0 {
		return
	}
	for _, b := range h.dense().Distribution() {
		if b.Count > 0 {
			fn(b.From, b.To, b.Count)
		}
	}
}

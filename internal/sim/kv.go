package sim

import (
	"encoding/binary"
	"hash/fnv"

	"github.com/ttftlab/ttftlab/internal/kvcalc"
)

// BlockSize is vLLM's KV block size on CUDA, in tokens.
const BlockSize = kvcalc.DefaultBlockSize

// cdiv returns ⌈a/b⌉ for non-negative a and positive b.
func cdiv(a, b int) int { return (a + b - 1) / b }

// chainHash returns the prefix-cache hash of one full block: FNV-64a over
// the parent block's hash and the block's token ids, so equal hashes mean
// equal prefixes (vLLM chains sha256(parent, tokens, extra_keys) the same way).
func chainHash(parent uint64, tokens []uint32) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037) // FNV-64 offset basis
	for i := 0; i < 8; i++ {
		h = (h ^ (parent >> (8 * i) & 0xff)) * prime
	}
	for _, t := range tokens {
		for i := 0; i < 4; i++ {
			h = (h ^ uint64(t>>(8*i)&0xff)) * prime
		}
	}
	return h
}

// blockPool is vLLM V1's paged KV block pool (vllm/v1/core/block_pool.py):
// a fixed set of blocks, a free queue ordered for LRU eviction, and a map
// from block hash to the cached block. Block 0 is the null block and is
// never handed out. A freed block keeps its hash and stays findable until it
// is reused; cached blocks with no references count as free.
//
// blockPool is owned by the scheduler goroutine and is not safe for
// concurrent use.
type blockPool struct {
	n       int      // blocks, including the null block
	ref     []int32  // references per block
	hash    []uint64 // block hash when hashed[b]
	hashed  []bool
	prev    []int32 // free-queue links, -1 at the ends
	next    []int32
	inFree  []bool
	head    int32 // LRU end: evicted first
	tail    int32
	numFree int
	cached  map[uint64]int32
	caching bool
}

// newBlockPool returns a pool of n blocks (n ≥ 2) with all but the null
// block free. With caching off, hashes are never recorded.
func newBlockPool(n int, caching bool) *blockPool {
	p := &blockPool{
		n:       n,
		ref:     make([]int32, n),
		hash:    make([]uint64, n),
		hashed:  make([]bool, n),
		prev:    make([]int32, n),
		next:    make([]int32, n),
		inFree:  make([]bool, n),
		head:    -1,
		tail:    -1,
		cached:  make(map[uint64]int32),
		caching: caching,
	}
	for b := 1; b < n; b++ {
		p.pushFree(int32(b))
	}
	return p
}

// usable returns the number of blocks that can hold KV (all but the null block).
func (p *blockPool) usable() int { return p.n - 1 }

// usage returns vLLM's kv_cache_usage_perc: 1 − free/(num_gpu_blocks − 1).
func (p *blockPool) usage() float64 {
	if p.usable() <= 0 {
		return 0
	}
	return 1 - float64(p.numFree)/float64(p.usable())
}

func (p *blockPool) pushFree(b int32) {
	p.prev[b], p.next[b] = p.tail, -1
	if p.tail >= 0 {
		p.next[p.tail] = b
	} else {
		p.head = b
	}
	p.tail = b
	p.inFree[b] = true
	p.numFree++
}

func (p *blockPool) removeFree(b int32) {
	if p.prev[b] >= 0 {
		p.next[p.prev[b]] = p.next[b]
	} else {
		p.head = p.next[b]
	}
	if p.next[b] >= 0 {
		p.prev[p.next[b]] = p.prev[b]
	} else {
		p.tail = p.prev[b]
	}
	p.prev[b], p.next[b] = -1, -1
	p.inFree[b] = false
	p.numFree--
}

// popFree takes the least recently freed block, evicting its cached hash.
// The caller must have checked numFree > 0.
func (p *blockPool) popFree() int32 {
	b := p.head
	p.removeFree(b)
	if p.hashed[b] {
		if p.cached[p.hash[b]] == b {
			delete(p.cached, p.hash[b])
		}
		p.hashed[b] = false
	}
	p.ref[b] = 1
	return b
}

// lookup returns the longest run of cached blocks matching hashes, without
// taking references.
func (p *blockPool) lookup(hashes []uint64) []int32 {
	if !p.caching {
		return nil
	}
	var hit []int32
	for _, h := range hashes {
		b, ok := p.cached[h]
		if !ok {
			break
		}
		hit = append(hit, b)
	}
	return hit
}

// touch takes a reference on each block, taking free ones off the free queue.
func (p *blockPool) touch(blocks []int32) {
	for _, b := range blocks {
		if p.ref[b] == 0 {
			p.removeFree(b)
		}
		p.ref[b]++
	}
}

// release drops one reference on each block, in reverse order so that a
// request's tail blocks are evicted before its prefix blocks.
func (p *blockPool) release(blocks []int32) {
	for i := len(blocks) - 1; i >= 0; i-- {
		b := blocks[i]
		p.ref[b]--
		if p.ref[b] == 0 {
			p.pushFree(b)
		}
	}
}

// resetCache forgets every cached block hash. The caller has checked that
// no block is in use.
func (p *blockPool) resetCache() {
	clear(p.cached)
	clear(p.hashed)
}

// cacheBlock records that full block b holds the prefix with hash h. When
// another block already holds h, b stays unhashed (a duplicate).
func (p *blockPool) cacheBlock(b int32, h uint64) {
	if !p.caching || p.hashed[b] {
		return
	}
	if _, dup := p.cached[h]; dup {
		return
	}
	p.cached[h] = b
	p.hash[b] = h
	p.hashed[b] = true
}

// freeNeeded returns how many free blocks an allocation of newBlocks fresh
// blocks plus references on hit consumes: hit blocks with no references sit
// in the free queue and leave it when touched.
func (p *blockPool) freeNeeded(hit []int32, newBlocks int) int {
	need := newBlocks
	for _, b := range hit {
		if p.ref[b] == 0 {
			need++
		}
	}
	return need
}

// kvManager maps requests to blocks (vllm/v1/core/kv_cache_manager.py).
type kvManager struct {
	pool     *blockPool
	noneHash uint64 // parent hash of a request's first block
}

func newKVManager(numBlocks int, caching bool, seed int64) *kvManager {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], uint64(seed))
	h := fnv.New64a()
	h.Write([]byte("NONE_HASH"))
	h.Write(buf[:])
	return &kvManager{pool: newBlockPool(numBlocks, caching), noneHash: h.Sum64()}
}

// blockHashes extends r's chained hashes to every full block of r.tokens.
func (m *kvManager) blockHashes(r *request) []uint64 {
	for i := len(r.blockHashes); (i+1)*BlockSize <= len(r.tokens); i++ {
		parent := m.noneHash
		if i > 0 {
			parent = r.blockHashes[i-1]
		}
		r.blockHashes = append(r.blockHashes, chainHash(parent, r.tokens[i*BlockSize:(i+1)*BlockSize]))
	}
	return r.blockHashes
}

// computedBlocks returns the cached blocks that cover a prefix of r, capped
// so that at least one token is left to compute (vLLM caps a hit at n−1).
func (m *kvManager) computedBlocks(r *request) []int32 {
	if !m.pool.caching {
		return nil
	}
	hashes := m.blockHashes(r)
	maxBlocks := (len(r.tokens) - 1) / BlockSize
	if len(hashes) > maxBlocks {
		hashes = hashes[:maxBlocks]
	}
	return m.pool.lookup(hashes)
}

// allocate gives r the blocks it needs to compute numNew more tokens after
// its computed tokens, first taking references on hit (a fresh request's
// prefix-cache hit). It returns false, changing nothing, when the free
// blocks do not suffice.
func (m *kvManager) allocate(r *request, hit []int32, numNew int) bool {
	computed := r.numComputed + len(hit)*BlockSize
	newBlocks := max(0, cdiv(computed+numNew, BlockSize)-len(r.blocks)-len(hit))
	if m.pool.freeNeeded(hit, newBlocks) > m.pool.numFree {
		return false
	}
	m.pool.touch(hit)
	r.blocks = append(r.blocks, hit...)
	r.numComputed = computed
	r.numCachedBlocks += len(hit)
	for range newBlocks {
		r.blocks = append(r.blocks, m.pool.popFree())
	}
	return true
}

// cacheFull registers r's newly completed full blocks in the prefix cache.
func (m *kvManager) cacheFull(r *request) {
	if !m.pool.caching {
		return
	}
	full := r.numComputed / BlockSize
	if full <= r.numCachedBlocks {
		return
	}
	hashes := m.blockHashes(r)
	for i := r.numCachedBlocks; i < full && i < len(hashes); i++ {
		m.pool.cacheBlock(r.blocks[i], hashes[i])
	}
	r.numCachedBlocks = full
}

// free releases all of r's blocks and resets its progress.
func (m *kvManager) free(r *request) {
	m.pool.release(r.blocks)
	r.blocks = r.blocks[:0]
	r.numComputed = 0
	r.numCachedBlocks = 0
}

package oai

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// encodeNetHTTP builds req as an *http.Request. Its context is set when it
// is sent (roundTripNetHTTP), once the request's timeouts exist.
func (o *outgoing) encodeNetHTTP(req *Request, url string, body []byte) error {
	hreq, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	if req.Stream {
		hreq.Header.Set("Accept", "text/event-stream")
	}
	if req.APIKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+req.APIKey)
	}
	for k, v := range req.Headers {
		// net/http would refuse these only once sending, after Send.
		if err := checkHeader(k, v); err != nil {
			return err
		}
		hreq.Header.Set(k, v)
	}
	o.hreq = hreq
	return nil
}

// roundTripNetHTTP sends hreq through net/http under ctx, with connection
// events traced, and hands the response to readBody.
func (c *Client) roundTripNetHTTP(ctx context.Context, cancel context.CancelCauseFunc, req *Request, hreq *http.Request, s *stream) {
	r := s.r
	tr := reqTrace{base: r.Send}
	defer tr.fill(r)
	resp, err := c.hc.Do(hreq.WithContext(httptrace.WithClientTrace(ctx, tr.hooks())))
	if err != nil {
		r.Done = time.Now()
		r.Err = classify(ctx, err, false)
		return
	}
	defer resp.Body.Close()
	r.Header = time.Now()
	r.Status = resp.StatusCode
	c.readBody(ctx, cancel, req, s, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Body)
}

// Models returns the model ids listed by the server's /v1/models.
func (c *Client) Models(ctx context.Context, baseURL, apiKey string) ([]string, error) {
	base, err := normalizeBase(baseURL)
	if err != nil {
		return nil, err
	}
	if c.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/models", nil)
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e := httpError(resp.StatusCode, resp.Body)
		return nil, fmt.Errorf("list models: %w", e)
	}
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody)).Decode(&list); err != nil {
		return nil, fmt.Errorf("list models: decode %s/v1/models: %w", base, err)
	}
	ids := make([]string, 0, len(list.Data))
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	return ids, nil
}

// reqTrace records connection events as offsets from base. The hooks run on
// transport goroutines, hence the atomics.
type reqTrace struct {
	base      time.Time
	connected atomic.Int64
	wrote     atomic.Int64
	reused    atomic.Bool
}

func (t *reqTrace) hooks() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			t.connected.Store(int64(time.Since(t.base)))
			t.reused.Store(info.Reused)
		},
		WroteRequest: func(httptrace.WroteRequestInfo) {
			t.wrote.Store(int64(time.Since(t.base)))
		},
	}
}

func (t *reqTrace) fill(r *Result) {
	r.Connected = time.Duration(t.connected.Load())
	r.Wrote = time.Duration(t.wrote.Load())
	r.Reused = t.reused.Load()
}

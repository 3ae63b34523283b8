// Package adminclient is the typed client of the bluegreen admin API: the
// CLI's client commands, the soak harness and the system tests call the
// proxy through it.
//
// Reads are retried on connection errors and gateway answers (502, 503,
// 504); a switch is retried the same way, which is safe when it names its
// target colour: a repeated switch answers "no change". Every call takes a
// context that ends its waits and retries.
//
// To add a call: write a method that calls c.Do with the method, the path
// below the base URL, the query and a JSON body (nil for none), and decodes
// the returned body; Do already maps the failures to *UnreachableError and
// *APIError, so ExitCode works on the new call's errors too.
package adminclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/state"
)

// MaxAnswerBytes bounds how much of an admin answer the client reads.
const MaxAnswerBytes = 4 << 20

// Options are the retry and timeout knobs of a Client.
type Options struct {
	RetryMax       int           // retries after the first attempt; 0: one attempt
	RetryWaitMin   time.Duration // first wait between attempts
	RetryWaitMax   time.Duration // longest wait between attempts
	RequestTimeout time.Duration // one attempt of one call
}

// DefaultOptions are the options of the bluegreen CLI.
func DefaultOptions() Options {
	return Options{
		RetryMax:       3,
		RetryWaitMin:   200 * time.Millisecond,
		RetryWaitMax:   2 * time.Second,
		RequestTimeout: 10 * time.Second,
	}
}

// Client calls the admin API at one base URL. A Client is safe for use by
// several goroutines at once; Close releases its idle connections.
type Client struct {
	base  *url.URL
	token string // sent only on POST
	http  *retryablehttp.Client
}

// New returns a client of the admin API at base. token, when not empty, is
// sent as a bearer token on POST requests only.
func New(base *url.URL, token string, o Options) *Client {
	rc := retryablehttp.NewClient()
	rc.Logger = nil
	rc.RetryMax = o.RetryMax
	rc.RetryWaitMin = o.RetryWaitMin
	rc.RetryWaitMax = o.RetryWaitMax
	rc.CheckRetry = RetryPolicy
	rc.Backoff = CappedBackoff
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	rc.HTTPClient.Timeout = o.RequestTimeout
	rc.HTTPClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{base: base, token: token, http: rc}
}

// FromEnv returns a client of the admin API named by BLUEGREEN_ADMIN_URL,
// with the token from BLUEGREEN_ADMIN_TOKEN or _FILE when withToken is set.
func FromEnv(getenv func(string) string, withToken bool, o Options) (*Client, error) {
	base, err := URLFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	token := ""
	if withToken {
		if token, err = TokenFromEnv(getenv); err != nil {
			return nil, err
		}
	}
	return New(base, token, o), nil
}

// Base returns the client's base URL.
func (c *Client) Base() *url.URL { return c.base }

// Close closes the client's idle connections.
func (c *Client) Close() { c.http.HTTPClient.CloseIdleConnections() }

// RetryPolicy is a retryablehttp.CheckRetry: it retries connection errors
// (as retryablehttp.DefaultRetryPolicy does) and the answers 502, 503 and
// 504, never another answer, and stops when ctx ends.
func RetryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true, nil
	}
	return false, nil
}

// CappedBackoff is retryablehttp.DefaultBackoff with a Retry-After answer
// capped at maxWait, so a proxy in front cannot make the client sleep long.
func CappedBackoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	return min(retryablehttp.DefaultBackoff(minWait, maxWait, attempt, resp), maxWait)
}

// Do calls the admin API and returns the body of a 2xx answer. path is
// below the base URL ("admin/status"); body, when not nil, is sent as JSON.
// Errors are an *UnreachableError, an *APIError, ctx's error, or a local one.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
	u := c.base.JoinPath(path)
	u.RawQuery = query.Encode()
	var raw any
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		raw = b
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u.String(), raw)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method == http.MethodPost && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &UnreachableError{Base: c.base, Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBytes))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("reading the answer to %s %s: %s", method, u.Path, ShortNetCause(err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &APIError{Status: resp.StatusCode, Raw: data}
		_ = json.Unmarshal(data, &e.Body)
		return nil, e
	}
	return data, nil
}

// Status calls GET /admin/status and returns the answer decoded and as received.
func (c *Client) Status(ctx context.Context) (admin.Status, []byte, error) {
	var st admin.Status
	data, err := c.Do(ctx, http.MethodGet, "admin/status", nil, nil)
	if err != nil {
		return st, nil, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, nil, fmt.Errorf("the status answer is not valid: %w", err)
	}
	return st, data, nil
}

// historyAnswer is the answer of GET /admin/history.
type historyAnswer struct {
	History []state.Event `json:"history"`
}

// History calls GET /admin/history and returns the switches, newest first;
// limit 0 asks for every switch.
func (c *Client) History(ctx context.Context, limit int) ([]state.Event, []byte, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var h historyAnswer
	data, err := c.Do(ctx, http.MethodGet, "admin/history", q, nil)
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, nil, fmt.Errorf("the history answer is not valid: %w", err)
	}
	return h.History, data, nil
}

// Cutover calls POST /admin/cutover. Name the target (req.To) so that a
// retried request cannot switch twice.
func (c *Client) Cutover(ctx context.Context, req admin.SwitchRequest) (admin.Status, []byte, error) {
	return c.post(ctx, "admin/cutover", req)
}

// Rollback calls POST /admin/rollback. Name the target (req.To, the
// previous colour) so that a retried request cannot roll back twice.
func (c *Client) Rollback(ctx context.Context, req admin.SwitchRequest) (admin.Status, []byte, error) {
	return c.post(ctx, "admin/rollback", req)
}

func (c *Client) post(ctx context.Context, path string, body admin.SwitchRequest) (admin.Status, []byte, error) {
	var st admin.Status
	data, err := c.Do(ctx, http.MethodPost, path, nil, body)
	if err != nil {
		return st, nil, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, nil, fmt.Errorf("the %s answer is not valid: %w", path, err)
	}
	return st, data, nil
}

// Metrics calls GET /metrics and returns the Prometheus exposition as received.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	return c.Do(ctx, http.MethodGet, "metrics", nil, nil)
}

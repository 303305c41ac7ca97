package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ferryhq/ferry/host/relays"
)

// Client calls a node's control API over its Unix socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path. It does not connect.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{path: path, hc: &http.Client{Transport: tr}}
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// CallError is a failed call the node answered; Code is the HTTP status.
type CallError struct {
	Code int
	Msg  string
}

func (e *CallError) Error() string { return e.Msg }

// IsNotFound reports whether err is the node saying "no such thing".
func IsNotFound(err error) bool {
	var ce *CallError
	return errors.As(err, &ce) && ce.Code == http.StatusNotFound
}

// ErrNotRunning wraps failures to reach the socket at all.
var ErrNotRunning = errors.New("node is not running")

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://ferry-node/v1"+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("control socket %s: %w", c.path, ctx.Err())
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%w (control socket %s: %v)", ErrNotRunning, c.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read reply of %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
		}
		return &CallError{Code: resp.StatusCode, Msg: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode reply of %s %s: %w", method, path, err)
	}
	return nil
}

// Status returns the node's status; an error means it does not answer.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var v Status
	return v, c.do(ctx, http.MethodGet, "/status", nil, &v)
}

// Workers lists the node's workers.
func (c *Client) Workers(ctx context.Context) ([]Worker, error) {
	var v []Worker
	return v, c.do(ctx, http.MethodGet, "/workers", nil, &v)
}

// Services lists the node's services.
func (c *Client) Services(ctx context.Context) ([]Service, error) {
	var v []Service
	return v, c.do(ctx, http.MethodGet, "/services", nil, &v)
}

// StartService starts a built-in service.
func (c *Client) StartService(ctx context.Context, req StartServiceRequest) (Service, error) {
	var v Service
	return v, c.do(ctx, http.MethodPost, "/services", req, &v)
}

// Send asks the node to send a message and returns the reply.
func (c *Client) Send(ctx context.Context, req SendRequest) (SendReply, error) {
	var v SendReply
	return v, c.do(ctx, http.MethodPost, "/messages", req, &v)
}

// Listeners lists the node's listeners of every transport.
func (c *Client) Listeners(ctx context.Context) ([]Listener, error) {
	v := []Listener{}
	return v, c.do(ctx, http.MethodGet, "/listeners", nil, &v)
}

// CreateListener starts a listener.
func (c *Client) CreateListener(ctx context.Context, req CreateRequest) (Listener, error) {
	var v Listener
	return v, c.do(ctx, http.MethodPost, "/listeners", req, &v)
}

// Listener returns one listener with its properties and counters.
func (c *Client) Listener(ctx context.Context, id string) (Listener, error) {
	var v Listener
	return v, c.do(ctx, http.MethodGet, "/listeners/"+url.PathEscape(id), nil, &v)
}

// DeleteListener closes a listener.
func (c *Client) DeleteListener(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/listeners/"+url.PathEscape(id), nil, nil)
}

// Connections lists the node's connections of every transport.
func (c *Client) Connections(ctx context.Context) ([]Connection, error) {
	v := []Connection{}
	return v, c.do(ctx, http.MethodGet, "/connections", nil, &v)
}

// CreateConnection opens a connection.
func (c *Client) CreateConnection(ctx context.Context, req CreateRequest) (Connection, error) {
	var v Connection
	return v, c.do(ctx, http.MethodPost, "/connections", req, &v)
}

// DeleteConnection closes a connection, named by id or worker address.
func (c *Client) DeleteConnection(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/connections/"+url.PathEscape(id), nil, nil)
}

// Plugins lists the node's plugins.
func (c *Client) Plugins(ctx context.Context) ([]Plugin, error) {
	var v []Plugin
	return v, c.do(ctx, http.MethodGet, "/plugins", nil, &v)
}

// Shutdown asks the node to stop; it returns once the node has accepted.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/shutdown", nil, nil)
}

// Relays lists the node's relay registrations and forwarders.
func (c *Client) Relays(ctx context.Context) (Relays, error) {
	var v Relays
	return v, c.do(ctx, http.MethodGet, "/relays", nil, &v)
}

// CreateRelay registers a relay from the node.
func (c *Client) CreateRelay(ctx context.Context, req CreateRelayRequest) (relays.RegistrationInfo, error) {
	var v relays.RegistrationInfo
	return v, c.do(ctx, http.MethodPost, "/relays", req, &v)
}

// DeleteRelay deletes a registration or a forwarder by name.
func (c *Client) DeleteRelay(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/relays/"+url.PathEscape(name), nil, nil)
}

// Inlets lists the node's TCP inlets.
func (c *Client) Inlets(ctx context.Context) ([]Portal, error) {
	var v []Portal
	return v, c.do(ctx, http.MethodGet, "/tcp-inlets", nil, &v)
}

// CreateInlet starts a TCP inlet.
func (c *Client) CreateInlet(ctx context.Context, req CreateInletRequest) (Portal, error) {
	var v Portal
	return v, c.do(ctx, http.MethodPost, "/tcp-inlets", req, &v)
}

// DeleteInlet stops a TCP inlet.
func (c *Client) DeleteInlet(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/tcp-inlets/"+url.PathEscape(id), nil, nil)
}

// Outlets lists the node's TCP outlets.
func (c *Client) Outlets(ctx context.Context) ([]Portal, error) {
	var v []Portal
	return v, c.do(ctx, http.MethodGet, "/tcp-outlets", nil, &v)
}

// CreateOutlet starts a TCP outlet.
func (c *Client) CreateOutlet(ctx context.Context, req CreateOutletRequest) (Portal, error) {
	var v Portal
	return v, c.do(ctx, http.MethodPost, "/tcp-outlets", req, &v)
}

// DeleteOutlet stops a TCP outlet.
func (c *Client) DeleteOutlet(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/tcp-outlets/"+url.PathEscape(id), nil, nil)
}

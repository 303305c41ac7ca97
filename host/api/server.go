package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/sdk/routing"
)

// maxBody bounds request bodies: a message payload plus JSON overhead.
const maxBody = 16 << 20

// DefaultSendTimeout applies when a SendRequest has no timeout.
const DefaultSendTimeout = 5 * time.Second

// MaxSendTimeout caps a SendRequest's timeout.
const MaxSendTimeout = 5 * time.Minute

// Server serves a Backend on a Unix socket.
type Server struct {
	b    Backend
	log  hclog.Logger
	ln   net.Listener
	http *http.Server
	path string
}

// Listen creates the socket at path (its directory must exist and should be
// mode 0700), makes it mode 0600 and returns a server ready to Serve. A stale
// socket file from a killed process is replaced; a socket another process
// still answers on is an error.
func Listen(path string, b Backend, log hclog.Logger) (*Server, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if st, err := os.Stat(filepath.Dir(path)); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("control socket directory %s is mode %v; it must be 0700 so only you can reach the node", filepath.Dir(path), st.Mode().Perm())
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s is in use by another process; stop that node first", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod control socket: %w", err)
	}
	s := &Server{b: b, log: log, ln: ln, path: path}
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Serve answers requests until Close; it returns nil after Close.
func (s *Server) Serve() error {
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the server, waiting until ctx ends for calls in progress,
// and removes the socket file.
func (s *Server) Close(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	os.Remove(s.path)
	return err
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// Unknown routes get a JSON error like every other reply, not the
	// mux's plain-text 404 (an older ferry may ask for a route that moved).
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.reply(w, nil, &StatusError{Code: http.StatusNotFound, Err: fmt.Errorf("no API route %s %s; this node may run another ferry version (ferry version)", r.Method, r.URL.Path)})
	})
	mux.HandleFunc("GET /v1/status", read(s, s.b.Status))
	mux.HandleFunc("GET /v1/workers", read(s, s.b.Workers))
	mux.HandleFunc("GET /v1/services", read(s, s.b.Services))
	mux.HandleFunc("POST /v1/services", create(s, s.b.StartService))
	mux.HandleFunc("POST /v1/messages", func(w http.ResponseWriter, r *http.Request) {
		var req SendRequest
		if !s.decode(w, r, &req) {
			return
		}
		route, err := routing.ParseRoute(req.Route)
		if err != nil {
			s.reply(w, nil, BadRequest(err))
			return
		}
		if len(route) == 0 {
			s.reply(w, nil, BadRequest(errors.New("the route is empty; say where the message goes, e.g. /service/echo")))
			return
		}
		timeout := req.Timeout
		if timeout <= 0 {
			timeout = DefaultSendTimeout
		}
		timeout = min(timeout, MaxSendTimeout)
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		m, err := s.b.Send(ctx, route, req.Payload)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				// The cause chain adds nothing here; say what to check.
				err = &StatusError{Code: http.StatusGatewayTimeout, Err: fmt.Errorf("no reply from %s within %s; check the route (ferry worker list --at NODE) and that its destination accepts messages from the network", route, timeout)}
			}
			s.reply(w, nil, err)
			return
		}
		s.reply(w, SendReply{Payload: m.Payload, Return: m.Return.String()}, nil)
	})
	mux.HandleFunc("GET /v1/listeners", read(s, s.b.Listeners))
	mux.HandleFunc("POST /v1/listeners", create(s, s.b.CreateListener))
	mux.HandleFunc("GET /v1/listeners/{id...}", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.b.Listener(r.Context(), r.PathValue("id"))
		s.reply(w, v, err)
	})
	mux.HandleFunc("DELETE /v1/listeners/{id...}", remove(s, "id", s.b.DeleteListener))
	mux.HandleFunc("GET /v1/connections", read(s, s.b.Connections))
	mux.HandleFunc("POST /v1/connections", create(s, s.b.CreateConnection))
	// {id...}: a connection may be named by its worker address.
	mux.HandleFunc("DELETE /v1/connections/{id...}", remove(s, "id", s.b.DeleteConnection))
	mux.HandleFunc("GET /v1/plugins", read(s, s.b.Plugins))
	s.portalRoutes(mux)
	s.secureRoutes(mux)
	mux.HandleFunc("POST /v1/shutdown", func(w http.ResponseWriter, r *http.Request) {
		s.reply(w, struct{}{}, nil)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		s.b.Shutdown()
	})
	return mux
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		s.reply(w, nil, BadRequest(fmt.Errorf("request body: %w", err)))
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		s.reply(w, nil, BadRequest(errors.New("request body has data after the JSON value")))
		return false
	}
	return true
}

func (s *Server) reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusInternalServerError
		var se *StatusError
		switch {
		case errors.As(err, &se):
			code = se.Code
		case errors.Is(err, context.DeadlineExceeded):
			code = http.StatusGatewayTimeout
		}
		s.log.Debug("control API call failed", "error", err)
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(Error{Error: err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

// read serves f's result as the JSON reply.
func read[T any](s *Server, f func(context.Context) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r.Context())
		s.reply(w, v, err)
	}
}

// create decodes a Req body, calls f with it and serves its result.
func create[Req, T any](s *Server, f func(context.Context, Req) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if !s.decode(w, r, &req) {
			return
		}
		v, err := f(r.Context(), req)
		s.reply(w, v, err)
	}
}

// remove calls f with the path value key and serves an empty reply.
func remove(s *Server, key string, f func(context.Context, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.reply(w, struct{}{}, f(r.Context(), r.PathValue(key)))
	}
}

// portalRoutes serves relays, inlets and outlets when the backend has them.
func (s *Server) portalRoutes(mux *http.ServeMux) {
	pb, ok := s.b.(PortalBackend)
	if !ok {
		na := func(w http.ResponseWriter, r *http.Request) {
			s.reply(w, nil, &StatusError{Code: http.StatusNotImplemented, Err: errors.New("this node does not run relays or portals")})
		}
		for _, p := range []string{"/v1/relays", "/v1/relays/", "/v1/tcp-inlets", "/v1/tcp-inlets/", "/v1/tcp-outlets", "/v1/tcp-outlets/"} {
			mux.HandleFunc(p, na)
		}
		return
	}
	mux.HandleFunc("GET /v1/relays", read(s, pb.Relays))
	mux.HandleFunc("POST /v1/relays", create(s, pb.CreateRelay))
	mux.HandleFunc("DELETE /v1/relays/{name}", remove(s, "name", pb.DeleteRelay))
	mux.HandleFunc("GET /v1/tcp-inlets", read(s, pb.Inlets))
	mux.HandleFunc("POST /v1/tcp-inlets", create(s, pb.CreateInlet))
	// {id...}: an outlet's id is route text with slashes.
	mux.HandleFunc("DELETE /v1/tcp-inlets/{id...}", remove(s, "id", pb.DeleteInlet))
	mux.HandleFunc("GET /v1/tcp-outlets", read(s, pb.Outlets))
	mux.HandleFunc("POST /v1/tcp-outlets", create(s, pb.CreateOutlet))
	mux.HandleFunc("DELETE /v1/tcp-outlets/{id...}", remove(s, "id", pb.DeleteOutlet))
}

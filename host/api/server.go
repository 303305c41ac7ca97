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
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.b.Status(r.Context())
		s.reply(w, v, err)
	})
	mux.HandleFunc("GET /v1/workers", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.b.Workers(r.Context())
		s.reply(w, v, err)
	})
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.b.Services(r.Context())
		s.reply(w, v, err)
	})
	mux.HandleFunc("POST /v1/services", func(w http.ResponseWriter, r *http.Request) {
		var req StartServiceRequest
		if !s.decode(w, r, &req) {
			return
		}
		v, err := s.b.StartService(r.Context(), req)
		s.reply(w, v, err)
	})
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
	mux.HandleFunc("GET /v1/tcp-listeners", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.b.Listeners(r.Context())
		s.reply(w, v, err)
	})
	mux.HandleFunc("POST /v1/tcp-listeners", func(w http.ResponseWriter, r *http.Request) {
		var req CreateRequest
		if !s.decode(w, r, &req) {
			return
		}
		v, err := s.b.CreateListener(r.Context(), req.Address)
		s.reply(w, v, err)
	})
	mux.HandleFunc("DELETE /v1/tcp-listeners/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.reply(w, struct{}{}, s.b.DeleteListener(r.Context(), r.PathValue("id")))
	})
	mux.HandleFunc("GET /v1/tcp-connections", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.b.Connections(r.Context())
		s.reply(w, v, err)
	})
	mux.HandleFunc("POST /v1/tcp-connections", func(w http.ResponseWriter, r *http.Request) {
		var req CreateRequest
		if !s.decode(w, r, &req) {
			return
		}
		v, err := s.b.CreateConnection(r.Context(), req.Address)
		s.reply(w, v, err)
	})
	mux.HandleFunc("DELETE /v1/tcp-connections/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.reply(w, struct{}{}, s.b.DeleteConnection(r.Context(), r.PathValue("id")))
	})
	mux.HandleFunc("GET /v1/plugins", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.b.Plugins(r.Context())
		s.reply(w, v, err)
	})
	s.portalRoutes(mux)
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
	mux.HandleFunc("GET /v1/relays", func(w http.ResponseWriter, r *http.Request) {
		v, err := pb.Relays(r.Context())
		s.reply(w, v, err)
	})
	mux.HandleFunc("POST /v1/relays", func(w http.ResponseWriter, r *http.Request) {
		var req CreateRelayRequest
		if !s.decode(w, r, &req) {
			return
		}
		v, err := pb.CreateRelay(r.Context(), req)
		s.reply(w, v, err)
	})
	mux.HandleFunc("DELETE /v1/relays/{name}", func(w http.ResponseWriter, r *http.Request) {
		s.reply(w, struct{}{}, pb.DeleteRelay(r.Context(), r.PathValue("name")))
	})
	mux.HandleFunc("GET /v1/tcp-inlets", func(w http.ResponseWriter, r *http.Request) {
		v, err := pb.Inlets(r.Context())
		s.reply(w, v, err)
	})
	mux.HandleFunc("POST /v1/tcp-inlets", func(w http.ResponseWriter, r *http.Request) {
		var req CreateInletRequest
		if !s.decode(w, r, &req) {
			return
		}
		v, err := pb.CreateInlet(r.Context(), req)
		s.reply(w, v, err)
	})
	// {id...}: an outlet's id is route text with slashes.
	mux.HandleFunc("DELETE /v1/tcp-inlets/{id...}", func(w http.ResponseWriter, r *http.Request) {
		s.reply(w, struct{}{}, pb.DeleteInlet(r.Context(), r.PathValue("id")))
	})
	mux.HandleFunc("GET /v1/tcp-outlets", func(w http.ResponseWriter, r *http.Request) {
		v, err := pb.Outlets(r.Context())
		s.reply(w, v, err)
	})
	mux.HandleFunc("POST /v1/tcp-outlets", func(w http.ResponseWriter, r *http.Request) {
		var req CreateOutletRequest
		if !s.decode(w, r, &req) {
			return
		}
		v, err := pb.CreateOutlet(r.Context(), req)
		s.reply(w, v, err)
	})
	mux.HandleFunc("DELETE /v1/tcp-outlets/{id...}", func(w http.ResponseWriter, r *http.Request) {
		s.reply(w, struct{}{}, pb.DeleteOutlet(r.Context(), r.PathValue("id")))
	})
}

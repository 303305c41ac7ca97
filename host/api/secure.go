package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/ferryhq/ferry/host/securechannel"
)

// Secure channel endpoints (under /v1), served when the backend implements
// SecureBackend:
//
//	GET    /identity               NodeIdentity
//	GET    /secure-channels        SecureChannels
//	POST   /secure-channels        CreateSecureChannelRequest -> securechannel.Info
//	DELETE /secure-channels/{id}   (the channel's address, /worker/<id>, or its id)

// NodeIdentity is the identity a node proves in its secure channels.
type NodeIdentity struct {
	Name       string `json:"name"`
	Identifier string `json:"identifier"`
	// Listener is the address of the node's secure channel listener.
	Listener string `json:"listener"`
}

// SecureChannels lists a node's secure channels: those it created
// (initiator) and those its listener accepted (responder), with the
// listener's totals.
type SecureChannels struct {
	Identity NodeIdentity         `json:"identity"`
	Channels []securechannel.Info `json:"channels"`
	Listener securechannel.Stats  `json:"listener_stats"`
}

// CreateSecureChannelRequest creates a channel from the node to the
// listener at the end of Route (route text, e.g.
// /worker/<connection>/service/api).
type CreateSecureChannelRequest struct {
	Route string `json:"route"`
	// Authorized lists the identifiers accepted at the far end; empty
	// accepts any identity (it is still learnt and checked by access
	// control).
	Authorized []string `json:"authorized,omitempty"`
	// Timeout bounds the handshake; default securechannel.DefaultHandshakeTimeout.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// SecureBackend is the part of a Backend that serves identities and secure
// channels; a Backend without it answers those endpoints with 501.
type SecureBackend interface {
	Identity(ctx context.Context) (NodeIdentity, error)
	SecureChannels(ctx context.Context) (SecureChannels, error)
	CreateSecureChannel(ctx context.Context, req CreateSecureChannelRequest) (securechannel.Info, error)
	DeleteSecureChannel(ctx context.Context, id string) error
}

func (s *Server) secureRoutes(mux *http.ServeMux) {
	sb, ok := s.b.(SecureBackend)
	if !ok {
		na := func(w http.ResponseWriter, r *http.Request) {
			s.reply(w, nil, &StatusError{Code: http.StatusNotImplemented, Err: errors.New("this node does not run secure channels")})
		}
		for _, p := range []string{"/v1/identity", "/v1/secure-channels", "/v1/secure-channels/"} {
			mux.HandleFunc(p, na)
		}
		return
	}
	mux.HandleFunc("GET /v1/identity", read(s, sb.Identity))
	mux.HandleFunc("GET /v1/secure-channels", read(s, sb.SecureChannels))
	mux.HandleFunc("POST /v1/secure-channels", create(s, sb.CreateSecureChannel))
	mux.HandleFunc("DELETE /v1/secure-channels/{id...}", remove(s, "id", sb.DeleteSecureChannel))
}

// Identity returns the node's identity.
func (c *Client) Identity(ctx context.Context) (NodeIdentity, error) {
	var v NodeIdentity
	return v, c.do(ctx, http.MethodGet, "/identity", nil, &v)
}

// SecureChannels lists the node's secure channels.
func (c *Client) SecureChannels(ctx context.Context) (SecureChannels, error) {
	var v SecureChannels
	return v, c.do(ctx, http.MethodGet, "/secure-channels", nil, &v)
}

// CreateSecureChannel creates a secure channel from the node.
func (c *Client) CreateSecureChannel(ctx context.Context, req CreateSecureChannelRequest) (securechannel.Info, error) {
	var v securechannel.Info
	return v, c.do(ctx, http.MethodPost, "/secure-channels", req, &v)
}

// DeleteSecureChannel closes one of the node's secure channels.
func (c *Client) DeleteSecureChannel(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/secure-channels/"+url.PathEscape(id), nil, nil)
}

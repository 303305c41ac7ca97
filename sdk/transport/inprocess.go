package transport

import (
	"context"
	"fmt"
	"net"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/ferryhq/ferry/sdk/transport/internal/pb"
)

// ServeInProcess serves t over the plugin protocol on an in-memory gRPC
// connection and returns the host side. It lets tests (for example a
// conformance suite) exercise the exact gRPC glue a subprocess plugin uses
// without starting a process. stop closes the host side, the server and t.
func ServeInProcess(ctx context.Context, t Transport) (r *Remote, stop func(), err error) {
	srv := newServer(t, hclog.NewNullLogger())
	gs := grpc.NewServer(serverOptions(srv.info.MaxMessageSize)...)
	pb.RegisterTransportServer(gs, srv)
	ln := bufconn.Listen(1 << 20)
	go gs.Serve(ln)
	conn, err := grpc.NewClient("passthrough:///inprocess",
		append(DialOptions(),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
		)...)
	if err != nil {
		gs.Stop()
		return nil, nil, fmt.Errorf("in-process transport: %w", err)
	}
	r, err = NewRemote(ctx, conn, nil)
	if err != nil {
		conn.Close()
		gs.Stop()
		return nil, nil, fmt.Errorf("in-process transport: %w", err)
	}
	stop = func() {
		r.Close()
		conn.Close()
		gs.Stop()
		srv.close()
	}
	return r, stop, nil
}

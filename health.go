package main

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// healthServer is gRPC's health service whose Watch streams end when the
// shutdown begins. gRPC's own keep a Watch open until its client leaves, and
// grpc.Server.GracefulStop waits for every stream: one watcher (a load
// balancer, a prober, a client's health checking) would hold the stop until
// --shutdown-timeout and be cut there.
type healthServer struct {
	*health.Server
	stopping context.Context // done once Shutdown is called
	stop     context.CancelFunc
}

// The gRPC services whose health is reported on the xDS port, besides ""
// (the server as a whole).
var healthServices = []string{
	"envoy.service.discovery.v3.AggregatedDiscoveryService",
	"envoy.service.endpoint.v3.EndpointDiscoveryService",
}

// newHealthServer registers, on the xDS gRPC server, a health service that
// says NOT_SERVING until SetServing.
func newHealthServer(s *grpc.Server) *healthServer {
	ctx, cancel := context.WithCancel(context.Background())
	h := &healthServer{Server: health.NewServer(), stopping: ctx, stop: cancel}
	h.setAll(healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s, h)
	return h
}

// SetServing says SERVING for the server and every xDS service; called once
// the watcher has synced, never undone but by Shutdown.
func (h *healthServer) SetServing() { h.setAll(healthpb.HealthCheckResponse_SERVING) }

func (h *healthServer) setAll(st healthpb.HealthCheckResponse_ServingStatus) {
	for _, name := range append([]string{""}, healthServices...) {
		h.SetServingStatus(name, st)
	}
}

// errHealthShutdown ends Watch streams at shutdown, after NOT_SERVING.
var errHealthShutdown = status.Error(codes.Unavailable, "deltaeds is shutting down")

// Shutdown sets every service NOT_SERVING for good and ends every Watch
// stream, present or future, once it has sent its client that status.
func (h *healthServer) Shutdown() {
	h.Server.Shutdown()
	h.stop()
}

// Watch is gRPC's, on a stream whose context also ends at Shutdown. The
// final status (NOT_SERVING, or SERVICE_UNKNOWN for a service that is not
// registered) is sent before the stream ends, should gRPC's Watch have seen
// the shutdown before the status change.
func (h *healthServer) Watch(in *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(h.stopping, cancel)()
	w := &watchStream{Health_WatchServer: stream, ctx: ctx}
	err := h.Server.Watch(in, w)
	if h.stopping.Err() == nil || stream.Context().Err() != nil {
		return err // not the shutdown: the client left, or a send failed
	}
	final := healthpb.HealthCheckResponse_SERVICE_UNKNOWN
	if resp, err := h.Server.Check(stream.Context(), in); err == nil {
		final = resp.GetStatus()
	}
	if !w.sent || w.last != final {
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: final}); err != nil {
			return err
		}
	}
	return errHealthShutdown
}

// watchStream is a Watch stream with its own context, which remembers the
// last status it sent.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx  context.Context
	sent bool
	last healthpb.HealthCheckResponse_ServingStatus
}

func (w *watchStream) Context() context.Context { return w.ctx }

func (w *watchStream) Send(resp *healthpb.HealthCheckResponse) error {
	if err := w.Health_WatchServer.Send(resp); err != nil {
		return err
	}
	w.sent, w.last = true, resp.GetStatus()
	return nil
}

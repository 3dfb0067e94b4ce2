// Command deltaeds serves Kubernetes EndpointSlices to Envoy as Delta EDS.
//
//	deltaeds serve      run the control plane: watch -> translate -> xds -> delta
//	deltaeds bootstrap  write an Envoy bootstrap pointing at it
//	deltaeds check      lint an Envoy bootstrap against deltaeds and the cluster
//	deltaeds version    print the version, commit and Go version
//
// This file is the wiring: newProcess assembles watch -> translate -> xds ->
// delta and the servers that expose them, run runs and stops them. The rest
// of package main owns the process around it: the command line (cli.go) and
// the flags of serve (flags.go), logging (logging.go), the Kubernetes client
// (kube.go), TLS (tls.go), gRPC's options (grpc.go) and health (health.go),
// and the version (version.go).
//
// The packages: watch owns Kubernetes, translate the EndpointSlice -> CLA
// functions, xds the versioned store, delta the xDS protocol, admin the
// operations HTTP server and bootstrap the Envoy configuration. Imports go
// one way: xds and translate import none of the others; watch imports
// translate and xds; delta imports xds; bootstrap imports translate and xds;
// admin imports xds and delta, for their data types only (it reads them
// through small interfaces). Nothing imports admin, and only main runs them.
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promversion "github.com/prometheus/common/version"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/deltaeds/deltaeds/admin"
	"github.com/deltaeds/deltaeds/delta"
	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/watch"
	"github.com/deltaeds/deltaeds/xds"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills the process at once.
		<-ctx.Done()
		stop()
	}()
	code := runCLI(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// serve is `deltaeds serve` with its flags parsed and checked: it logs to
// logOut and serves until ctx ends.
func serve(ctx context.Context, cfg serveConfig, logOut io.Writer) error {
	log, err := newLogger(cfg.LogLevel, cfg.LogFormat, logOut)
	if err != nil {
		return usageError("serve: %v (see deltaeds serve --help)", err)
	}
	defer func() { _ = log.Sync() }() // flush; stderr may not support fsync
	defer logKlogTo(log)()            // client-go logs through klog
	p, err := newProcess(cfg, log)
	if err != nil {
		return err
	}
	return p.run(ctx)
}

// process is one `deltaeds serve`: the pipeline (watcher -> store -> xDS
// server), the gRPC server carrying xDS and health, the admin HTTP server,
// and the two listeners.
type process struct {
	cfg      serveConfig
	log      *zap.Logger
	kube     *kube
	store    *xds.Store
	watcher  *watch.Watcher
	delta    *delta.Server
	grpc     *grpc.Server
	health   *healthServer
	admin    *admin.Server
	xdsLis   net.Listener
	adminLis net.Listener
}

// newProcess builds everything and opens both listeners, so that an
// unreadable file or a port in use is reported before anything runs. On
// error nothing is left open.
func newProcess(cfg serveConfig, log *zap.Logger) (_ *process, err error) {
	if err := cfg.validate(); err != nil {
		return nil, usageError("serve: %v", err)
	}
	family, err := translate.ParseIPFamily(cfg.IPFamily)
	if err != nil {
		return nil, fmt.Errorf("--ip-family: %w", err)
	}
	p := &process{cfg: cfg, log: log, store: xds.NewStore()}
	defer func() {
		if err != nil {
			p.closeAll()
		}
	}()
	var tlsConfig *tls.Config
	if cfg.TLSCertFile != "" {
		if tlsConfig, err = serverTLS(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile, tlsReloadInterval, log); err != nil {
			return nil, err
		}
	}
	if p.kube, err = newKube(cfg); err != nil {
		return nil, err
	}
	if p.xdsLis, err = net.Listen("tcp", cfg.XDSAddress); err != nil {
		return nil, fmt.Errorf("xDS listener --%s %s: %w", flagXDSAddress, cfg.XDSAddress, err)
	}
	if p.adminLis, err = net.Listen("tcp", cfg.AdminAddress); err != nil {
		return nil, fmt.Errorf("admin listener --%s %s: %w", flagAdminAddr, cfg.AdminAddress, err)
	}
	reg := prometheus.NewRegistry()

	// watch -> translate -> xds: EndpointSlices in, CLAs in the store.
	p.watcher, err = watch.New(watch.Config{
		Client:                p.kube.client,
		Store:                 p.store,
		Namespaces:            cfg.Namespaces,
		LabelSelector:         cfg.LabelSelector,
		ServiceProxyName:      cfg.ServiceProxyName,
		Translate:             translate.Options{IncludeUnready: cfg.IncludeUnready, Family: family},
		NodeLocality:          cfg.NodeLocality,
		NodeZones:             cfg.ZoneFromNode,
		InternalTrafficPolicy: cfg.InternalTrafficPolicy,
		DeletedGracePeriod:    cfg.DeletedGracePeriod,
		Workers:               cfg.Workers,
		ProbeInterval:         cfg.ProbeInterval,
		Logger:                log.Named("watch"),
		Metrics:               watch.NewMetrics(reg),
	})
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}

	// xds -> delta: the store's CLAs out to Envoys over Delta ADS, on a gRPC
	// server that also carries grpc.health.v1. Each stream's view (zone,
	// node) picks the CLA variants it gets; a client that tells only its
	// node gets its zone from the watcher's Node informer.
	var zoneOfNode func(string) string
	if cfg.ZoneFromNode {
		zoneOfNode = p.watcher.NodeZone
	}
	p.delta = delta.NewServer(p.store, delta.Config{
		NodeNameMetadataKey: cfg.NodeNameMetadataKey,
		ZoneOfNode:          zoneOfNode,
		Logger:              log.Named("xds"),
		Metrics:             delta.NewMetrics(reg),
		MaxResponseBytes:    cfg.MaxResponseBytes,
		MaxRequestBytes:     cfg.MaxRequestBytes,
		MaxNamesPerStream:   cfg.MaxSubscriptionsPerStream,
		AckTimeout:          cfg.AckTimeout,
	})
	p.grpc = grpc.NewServer(append(p.delta.GRPCServerOptions(), grpcOptions(cfg, tlsConfig)...)...)
	p.delta.Register(p.grpc)
	p.health = newHealthServer(p.grpc)

	// The operations HTTP server reads all three.
	p.admin, err = admin.New(admin.Config{
		Store:    p.store,
		Streams:  p.delta,
		Watcher:  p.watcher,
		Registry: reg,
		Logger:   log.Named("admin"),
	})
	if err != nil {
		return nil, err
	}

	log.Info("configured",
		zap.String("version", promversion.Version),
		zap.String("kubeconfig_source", p.kube.source),
		zap.String("apiserver", p.kube.host),
		zap.Strings("namespaces", cfg.Namespaces),
		zap.String("label_selector", cfg.LabelSelector),
		zap.Bool("zone_from_node", cfg.ZoneFromNode),
		zap.Bool("internal_traffic_policy", cfg.InternalTrafficPolicy),
		zap.String("node_name_metadata_key", cfg.NodeNameMetadataKey),
		zap.Bool("tls", tlsConfig != nil),
		zap.Bool("mtls", cfg.TLSClientCAFile != ""))
	return p, nil
}

// closeAll releases what a newProcess that failed half-way had opened.
func (p *process) closeAll() {
	for _, l := range []net.Listener{p.xdsLis, p.adminLis} {
		if l != nil {
			_ = l.Close()
		}
	}
	if p.kube != nil {
		p.kube.http.CloseIdleConnections()
	}
}

// run serves until ctx ends or a part fails (its error is returned), then
// stops everything (stop). Every goroutine it starts is in one errgroup,
// waited for before it returns.
func (p *process) run(ctx context.Context) error {
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := p.watcher.Run(watchCtx); err != nil && watchCtx.Err() == nil {
			return fmt.Errorf("watch: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		// Ready once the watcher has synced; never undone, as readiness
		// does not depend on the API server after that.
		select {
		case <-p.watcher.SyncedCh():
			p.health.SetServing()
			p.log.Info("ready: serving xDS", zap.Int("clas", p.store.Len(xds.EndpointType)))
		case <-watchCtx.Done():
		}
		return nil
	})
	g.Go(func() error {
		if err := p.grpc.Serve(p.xdsLis); err != nil {
			return fmt.Errorf("xDS server on %s: %w", p.xdsLis.Addr(), err)
		}
		return nil
	})
	g.Go(func() error { return p.admin.Serve(p.adminLis) })
	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil {
			p.log.Info("stopping", zap.Duration("deadline", p.cfg.ShutdownTimeout))
		} else {
			p.log.Error("stopping after a failure", zap.Error(context.Cause(gctx)))
		}
		p.stop(stopWatch)
		return nil
	})
	p.log.Info("serving", zap.String("xds_address", p.xdsLis.Addr().String()),
		zap.String("admin_address", p.adminLis.Addr().String()))
	err := g.Wait()
	p.kube.http.CloseIdleConnections()
	p.log.Info("stopped")
	return err
}

// stop stops everything within cfg.ShutdownTimeout: the health service goes
// NOT_SERVING (and its Watch streams end once they have said so, not to hold
// the graceful stop), every xDS stream ends with UNAVAILABLE (Envoys
// reconnect to another replica and, with content-hash versions, are resent
// nothing), gRPC stops gracefully (forcefully at the deadline), the watcher
// stops, and the admin server last.
func (p *process) stop(stopWatch context.CancelFunc) {
	sctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
	defer cancel()
	p.health.Shutdown()
	if err := p.delta.Stop(sctx); err != nil {
		p.log.Warn("xDS streams did not end before the deadline", zap.Error(err))
	}
	forced := make(chan struct{})
	notForced := context.AfterFunc(sctx, func() {
		defer close(forced)
		p.log.Warn("gRPC did not stop gracefully before the deadline; closing its connections")
		p.grpc.Stop()
	})
	p.grpc.GracefulStop()
	if !notForced() {
		<-forced
	}
	stopWatch()

	// The admin server gets a moment even when the deadline is spent, so
	// requests in flight are answered rather than cut.
	deadline, _ := sctx.Deadline()
	actx, acancel := context.WithTimeout(context.Background(), max(time.Until(deadline), time.Second))
	defer acancel()
	if err := p.admin.Shutdown(actx); err != nil {
		p.log.Warn("admin server did not stop cleanly", zap.Error(err))
	}
}

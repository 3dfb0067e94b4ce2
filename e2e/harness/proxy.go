package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"go.uber.org/zap"
)

// Proxy is a TCP proxy standing for a Kubernetes Service in front of deltaeds replicas: clients
// dial its address, and SetBackend moves them to another replica by closing their connections,
// so they reconnect (presenting what they hold) to the new backend.
type Proxy struct {
	l   net.Listener
	log *zap.Logger

	mu      sync.Mutex
	backend string // "" refuses connections
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// NewProxy listens on a free loopback port and forwards to backend ("" refuses until
// SetBackend).
func NewProxy(backend string, log *zap.Logger) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("harness: proxy listen: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	p := &Proxy{l: l, log: log, backend: backend, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// SetBackend switches new connections to backend ("" refuses them) and closes every current
// connection, as a load balancer does when its endpoint goes away.
func (p *Proxy) SetBackend(backend string) {
	p.mu.Lock()
	p.backend = backend
	conns := p.conns
	p.conns = make(map[net.Conn]struct{})
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	p.log.Info("proxy backend switched", zap.String("backend", backend), zap.Int("cut", len(conns)/2))
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.log.Warn("proxy accept", zap.Error(err))
			}
			return
		}
		p.mu.Lock()
		backend, closed := p.backend, p.closed
		p.mu.Unlock()
		if backend == "" || closed {
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", backend)
		if err != nil {
			p.log.Info("proxy dial", zap.String("backend", backend), zap.Error(err))
			in.Close()
			continue
		}
		p.mu.Lock()
		if p.backend != backend || p.closed {
			// Switched while dialling: this connection belongs to the old backend.
			p.mu.Unlock()
			in.Close()
			out.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Close stops listening, closes every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.l.Close()
	p.SetBackend("")
	p.wg.Wait()
}

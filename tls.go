package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// tlsReloadInterval is how often, at most, a handshake checks the TLS files.
const tlsReloadInterval = 10 * time.Second

// serverTLS serves the certificate of certFile and keyFile and, with a
// clientCAFile, requires client certificates signed by it. The three files
// are read again, at most every reloadInterval (tlsReloadInterval), by the handshakes
// (tls.Config.GetConfigForClient), so certificates and CA bundles rotated by
// cert-manager or a Secret update are picked up without a restart. Files that
// fail to load are logged and the previous ones kept; the first load's
// errors are returned.
func serverTLS(certFile, keyFile, clientCAFile string, reloadInterval time.Duration, log *zap.Logger) (*tls.Config, error) {
	r := &tlsReloader{certFile: certFile, keyFile: keyFile, clientCAFile: clientCAFile, log: log, interval: reloadInterval}
	cfg, files, err := r.load()
	if err != nil {
		return nil, err
	}
	r.current, r.files, r.lastCheck = cfg, files, time.Now()
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"h2"},
		GetConfigForClient: r.configForClient,
	}, nil
}

// tlsReloader holds the serving tls.Config built from the files and the
// files' bytes it was built from.
type tlsReloader struct {
	certFile, keyFile, clientCAFile string
	log                             *zap.Logger
	interval                        time.Duration

	mu        sync.Mutex
	current   *tls.Config
	files     [3][]byte // cert, key, client CA as last loaded
	lastCheck time.Time
}

// load reads the files and builds the config a handshake uses.
func (r *tlsReloader) load() (*tls.Config, [3][]byte, error) {
	var files [3][]byte
	for i, f := range []string{r.certFile, r.keyFile, r.clientCAFile} {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, files, fmt.Errorf("TLS: %w", err)
		}
		files[i] = b
	}
	cert, err := tls.X509KeyPair(files[0], files[1])
	if err != nil {
		return nil, files, fmt.Errorf("--%s %s / --%s %s: %w", flagTLSCert, r.certFile, flagTLSKey, r.keyFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
		Certificates: []tls.Certificate{cert},
	}
	if r.clientCAFile != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(files[2]) {
			return nil, files, fmt.Errorf("--%s %s: no PEM certificate in it", flagTLSClientCA, r.clientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, files, nil
}

func (r *tlsReloader) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastCheck) < r.interval {
		return r.current, nil
	}
	r.lastCheck = time.Now()
	cfg, files, err := r.load()
	if bytes.Equal(files[0], r.files[0]) && bytes.Equal(files[1], r.files[1]) && bytes.Equal(files[2], r.files[2]) {
		return r.current, nil
	}
	if err != nil {
		// Maybe caught between two files' updates: retried at the next check.
		r.log.Warn("cannot reload the TLS files; keeping the loaded ones", zap.Error(err))
		return r.current, nil
	}
	r.current, r.files = cfg, files
	r.log.Info("reloaded the TLS files", zap.String("cert_file", r.certFile), zap.String("client_ca_file", r.clientCAFile))
	return r.current, nil
}

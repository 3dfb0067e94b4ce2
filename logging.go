package main

import (
	"fmt"
	"io"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"
)

// newLogger builds the process logger. Keys are stable: ts, level, logger,
// caller, msg, then the fields (node_id, cluster, type_url, nonce, ...).
func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: want debug, info, warn or error", flagLogLevel, level)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	var encoder zapcore.Encoder
	switch format {
	case "json":
		encoder = zapcore.NewJSONEncoder(enc)
	case "console":
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	default:
		return nil, fmt.Errorf("--%s %q: want json or console", flagLogFormat, format)
	}
	ws := zapcore.Lock(zapcore.AddSync(w))
	return zap.New(zapcore.NewCore(encoder, ws, lvl), zap.AddCaller(), zap.ErrorOutput(ws)), nil
}

// logKlogTo sends client-go's klog output to log, named "client-go",
// through zapr: klog's V(0) at info, V(1) at debug (higher verbosities are
// below debug, so dropped), errors under the "error" key, and the caller
// the client-go line that logged. The returned func restores klog's own
// output.
func logKlogTo(log *zap.Logger) (restore func()) {
	klog.SetLogger(zapr.NewLoggerWithOptions(log.Named("client-go"), zapr.DPanicOnBugs(false)))
	return klog.ClearLogger
}

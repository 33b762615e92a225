package request

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"
)

// Side says which end of a call an interceptor is running on.
type Side uint8

const (
	// ClientSide: the interceptor wraps one [Call], all its attempts
	// included.
	ClientSide Side = iota + 1
	// ServerSide: the interceptor wraps one run of a handler function,
	// after the body was decoded and validated.
	ServerSide
)

func (s Side) String() string {
	switch s {
	case ClientSide:
		return "client"
	case ServerSide:
		return "server"
	}
	return "unknown"
}

// CallInfo describes the call an interceptor wraps.
type CallInfo struct {
	Side   Side
	Method string // the HTTP method
	Path   string // the URL path
	// Pattern is the ServeMux pattern that matched, on the server side.
	Pattern string
	// Header is the request header: on the client side the outgoing one,
	// which an interceptor may change before calling next; on the server
	// side the incoming one, to read.
	Header http.Header
	// Request is the Req value; Response the Resp value, set once next
	// has returned without error.
	Request, Response any
	// Status is, on the server side, the status a success is answered
	// with (HandlerOptions.Status); zero on the client side.
	Status int
}

// Next continues a call: the next interceptor, or the call itself.
type Next func(ctx context.Context) error

// Interceptor is middleware with one shape for both sides: it may look at
// or change info and ctx, call next (or not), and look at or replace the
// error. On a client it wraps a whole Call; on a server, the handler
// function. The first interceptor of a list is the outermost.
type Interceptor func(ctx context.Context, info *CallInfo, next Next) error

func chain(ics []Interceptor, info *CallInfo, final Next) Next {
	next := final
	for i := len(ics) - 1; i >= 0; i-- {
		ic, inner := ics[i], next
		next = func(ctx context.Context) error { return ic(ctx, info, inner) }
	}
	return next
}

// Logging logs each call at the end: side, method, path, status (of a
// failure, and of a success on the server side), code, duration and error,
// at Info level, Warn for 4xx other than 499 and Error for 5xx. A caller
// that went away is logged with status 499. A nil logger
// means slog.Default().
func Logging(logger *slog.Logger) Interceptor {
	return func(ctx context.Context, info *CallInfo, next Next) error {
		log := logger
		if log == nil {
			log = slog.Default()
		}
		start := time.Now()
		err := next(ctx)
		code := CodeOf(err)
		status := info.Status
		level := slog.LevelInfo
		if err != nil {
			status = asError(err).HTTPStatus()
			if code == Internal && errors.Is(ctx.Err(), context.Canceled) {
				code = Canceled // the caller went away mid-call
			}
			if code == Canceled {
				status = StatusClientClosedRequest
			}
			switch {
			case status >= 500:
				level = slog.LevelError
			case status != StatusClientClosedRequest:
				level = slog.LevelWarn
			}
		}
		attrs := []slog.Attr{
			slog.String("side", info.Side.String()),
			slog.String("method", info.Method),
			slog.String("path", info.Path),
		}
		if status != 0 {
			attrs = append(attrs, slog.Int("status", status))
		}
		attrs = append(attrs, slog.Duration("duration", time.Since(start)))
		if err != nil {
			attrs = append(attrs, slog.String("code", string(code)), slog.String("error", err.Error()))
		}
		log.LogAttrs(ctx, level, "request", attrs...)
		return err
	}
}

// Recover turns a panic below it into an Internal error (its stack logged
// to logger, slog.Default() when nil), so that interceptors above it, such
// as Logging and Metrics, see an error instead of an unwinding stack. A
// Handler recovers panics on its own as well; Recover only moves the point.
func Recover(logger *slog.Logger) Interceptor {
	return func(ctx context.Context, info *CallInfo, next Next) (err error) {
		defer func() {
			if p := recover(); p != nil {
				log := logger
				if log == nil {
					log = slog.Default()
				}
				err = panicError(log, p)
			}
		}()
		return next(ctx)
	}
}

// Timeout bounds the rest of the call by d, when d is positive and the
// context has no earlier deadline. On a client the deadline also travels
// to the server.
func Timeout(d time.Duration) Interceptor {
	return func(ctx context.Context, info *CallInfo, next Next) error {
		if d <= 0 {
			return next(ctx)
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return next(ctx)
	}
}

// Auth runs fn before the call. On a server fn checks info.Header and
// returns the context the handler should see (with the caller's identity,
// say) or an error, usually Unauthenticated or PermissionDenied, that
// refuses the call. On a client fn sets info.Header (a bearer token).
func Auth(fn func(ctx context.Context, info *CallInfo) (context.Context, error)) Interceptor {
	return func(ctx context.Context, info *CallInfo, next Next) error {
		ctx, err := fn(ctx, info)
		if err != nil {
			return err
		}
		return next(ctx)
	}
}

// Metrics calls observe after each call with its code ("" on success) and
// how long it took: the hook for counters and histograms.
func Metrics(observe func(ctx context.Context, info *CallInfo, code Code, d time.Duration)) Interceptor {
	return func(ctx context.Context, info *CallInfo, next Next) error {
		start := time.Now()
		err := next(ctx)
		observe(ctx, info, CodeOf(err), time.Since(start))
		return err
	}
}

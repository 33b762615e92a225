package faultproxy

import (
	"bufio"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader) error {
	t.Helper()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err == nil {
		assert.Equal(t, "ping\n", line)
	}
	return err
}

func TestForwardsCutsPausesResumes(t *testing.T) {
	p, err := New(echoServer(t))
	require.NoError(t, err)
	defer p.Close()

	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	require.NoError(t, roundTrip(t, c, r))
	assert.Equal(t, 1, p.Open())
	assert.Equal(t, 1, p.Accepted())

	p.Cut()
	assert.Error(t, roundTrip(t, c, r), "a cut connection fails")

	c2, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c2.Close()
	require.NoError(t, roundTrip(t, c2, bufio.NewReader(c2)), "new connections work after a cut")

	p.Pause()
	c3, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err) // the listener accepts, then the proxy hangs up
	defer c3.Close()
	assert.Error(t, roundTrip(t, c3, bufio.NewReader(c3)), "refused while paused")

	p.Resume()
	c4, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c4.Close()
	require.NoError(t, roundTrip(t, c4, bufio.NewReader(c4)))
}

// A static Go program exercising the runtime's netpoller under the supervisor:
// net/http with keep-alive (server and client in one process) and a UDP echo.
// Usage: gonet <output file> <address>
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	out, err := os.OpenFile(os.Args[1], os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		os.Exit(2)
	}
	fail := func(what string, err error) {
		fmt.Fprintf(out, "FAIL %s: %v\n", what, err)
		os.Exit(1)
	}
	addr := os.Args[2]

	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		fail("listen", err)
	}
	var conns atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s", r.URL.Path)
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	client := &http.Client{Timeout: 10 * time.Second}
	url := "http://" + ln.Addr().String()
	for i := 0; i < 20; i++ {
		resp, err := client.Get(fmt.Sprintf("%s/%d", url, i))
		if err != nil {
			fail("get", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != fmt.Sprintf("hello /%d", i) {
			fail("body", fmt.Errorf("%q %v", body, err))
		}
	}
	fmt.Fprintf(out, "http 20 requests over %d connection(s)\n", conns.Load())

	pc, err := net.ListenPacket("udp", net.JoinHostPort(addr, "0"))
	if err != nil {
		fail("udp listen", err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		fail("udp dial", err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("go-udp")); err != nil {
		fail("udp write", err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "go-udp" {
		fail("udp read", fmt.Errorf("%q %v", buf[:n], err))
	}
	fmt.Fprintln(out, "udp echo ok")
	fmt.Fprintln(out, "done")
}

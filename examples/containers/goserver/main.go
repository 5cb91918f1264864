// A small static HTTP server for the FROM-scratch image (scripts/image): it uses only
// Go's standard library, so `CGO_ENABLED=0 go build` makes a binary with no dynamic
// dependency, and Go makes its system calls directly (no libc), which ztrun traps all
// the same.
//
//	GET  /             a line of text
//	GET  /blob?mib=N   N MiB (at most 1024) of a fixed pseudo-random stream
//	GET  /blob.sha256?mib=N   the hex SHA-256 of that stream
//	POST /sha256       the hex SHA-256 of the request body
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net/http"
	"strconv"
)

const mib = 1 << 20

// blobSize reads ?mib=N (default 1, at most 1024) as a byte count.
func blobSize(r *http.Request) (int64, error) {
	n := int64(1)
	if s := r.URL.Query().Get("mib"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 || v > 1024 {
			return 0, fmt.Errorf("mib must be 0..1024, got %q", s)
		}
		n = v
	}
	return n * mib, nil
}

// blob writes n bytes of the stream seeded with 1 to w.
func blob(w io.Writer, n int64) error {
	_, err := io.CopyN(w, rand.New(rand.NewSource(1)), n)
	return err
}

func main() {
	listen := flag.String("listen", ":8080", "address to serve HTTP on")
	flag.Parse()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "hello from a static Go server on the virtual network")
	})
	http.HandleFunc("/blob", func(w http.ResponseWriter, r *http.Request) {
		n, err := blobSize(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.Header().Set("Content-Type", "application/octet-stream")
		if err := blob(w, n); err != nil {
			log.Printf("blob: %v", err)
		}
	})
	http.HandleFunc("/blob.sha256", func(w http.ResponseWriter, r *http.Request) {
		n, err := blobSize(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h := sha256.New()
		_ = blob(h, n)
		fmt.Fprintln(w, hex.EncodeToString(h.Sum(nil)))
	})
	http.HandleFunc("/sha256", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST a body", http.StatusMethodNotAllowed)
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		log.Printf("sha256: %d bytes", n)
		fmt.Fprintln(w, hex.EncodeToString(h.Sum(nil)))
	})
	log.Printf("serving HTTP on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}

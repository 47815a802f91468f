package http

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCurl drives the server with the real curl binary. Without curl it skips, unless CI=true.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("curl is required when CI=true: %v", err)
		}
		t.Skipf("curl not on PATH: %v", err)
	}
	run := func(t *testing.T, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// -q ignores ~/.curlrc; --noproxy keeps proxy variables from the environment out of the way.
		args = append([]string{"-q", "--silent", "--show-error", "--fail", "--noproxy", "*"}, args...)
		out, err := exec.CommandContext(ctx, curl, args...).Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return string(out)
	}

	t.Run("keep-alive across two URLs", func(t *testing.T) {
		ts := startServer(t, Config{}, okDispatcher("hi"))
		out := run(t, "--output", os.DevNull, "--output", os.DevNull, "--write-out", "%{http_code} %{num_connects}\n",
			ts.url+"/one", ts.url+"/two")
		if want := "200 1\n200 0\n"; out != want {
			t.Errorf("curl wrote %q, want %q (the second URL on the first connection)", out, want)
		}
		if st := ts.Stats(); st.Accepted != 1 || st.Requests != 2 {
			t.Errorf("Stats = %+v, want 1 accepted, 2 requests", st)
		}
	})

	t.Run("chunked upload", func(t *testing.T) {
		ts := startServer(t, Config{MaxBody: 1 << 20}, &bodyDispatcher{})
		data := make([]byte, 300<<10)
		rand.Read(data)
		file := filepath.Join(t.TempDir(), "upload.bin")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out := run(t, "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/octet-stream",
			"--data-binary", "@"+file, ts.url+"/upload")
		sum := sha256.Sum256(data)
		if want := hex.EncodeToString(sum[:]) + " chunked"; out != want {
			t.Errorf("dispatcher saw %q, want %q", out, want)
		}
	})
}

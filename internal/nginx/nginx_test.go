package nginx

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestConfAccepted: nginx itself accepts the configuration Conf writes, with
// and without workers.
func TestConfAccepted(t *testing.T) {
	bin, err := Path()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v; CI must install it", err)
		}
		t.Skip(err)
	}
	for _, workers := range []int{0, 2} {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, "nginx.conf")
		c := Config{Dir: dir, Workers: workers, Routes: []Route{
			{Listen: "127.0.0.1:1", SCGI: "unix:/tmp/x.sock"},
			{Listen: "127.0.0.1:2", SCGI: "127.0.0.1:3"},
		}}
		if err := os.WriteFile(conf, []byte(Conf(c)), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "-t", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")).CombinedOutput()
		if err != nil {
			t.Errorf("nginx -t with %d workers: %v\n%s\n%s", workers, err, out, Conf(c))
		}
	}
}

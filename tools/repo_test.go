package tools_test

import (
	"os"
	"path/filepath"
)

// readRepoFile reads a file at the repository root, where the shipped
// model.conf and policy.csv live.
func readRepoFile(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join("..", name))
}

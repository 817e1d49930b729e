"""What every part uses: user-facing errors, atomic file writes, command-line plumbing."""

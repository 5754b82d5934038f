//go:build pacific

package main

const cephRelease = "pacific"

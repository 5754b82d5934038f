package main

import (
	"errors"
	"testing"
	"time"
)

func TestAsync(t *testing.T) {
	start := make(chan struct{})
	get := async(func() (int, error) { <-start; return 7, nil })
	got := make(chan int)
	go func() { v, _ := get(); got <- v }()
	select {
	case v := <-got:
		t.Fatalf("the result %d came before fn returned", v)
	case <-time.After(20 * time.Millisecond):
	}
	close(start)
	if v := <-got; v != 7 {
		t.Fatalf("got %d", v)
	}
	if v, err := get(); v != 7 || err != nil { // asked again: the same result
		t.Fatalf("got %d, %v", v, err)
	}
	boom := errors.New("boom")
	if _, err := async(func() (int, error) { return 0, boom })(); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
}

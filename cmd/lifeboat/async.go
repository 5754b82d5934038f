package main

// async runs fn in the background and returns a function that waits for
// its result; the result can be asked for any number of times. Commands
// use it to overlap independent setup steps (connecting to Ceph, opening
// the repository), and defer a call so fn never outlives what it uses.
func async[T any](fn func() (T, error)) func() (T, error) {
	var v T
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		v, err = fn()
	}()
	return func() (T, error) {
		<-done
		return v, err
	}
}

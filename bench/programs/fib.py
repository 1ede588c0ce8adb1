# Fib: naive doubly recursive Fibonacci; fib(32), computed 5 times.


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def main():
    iterations = 5
    result = 0
    for _ in range(iterations):
        result = fib(32)
        if result != 2178309:
            raise RuntimeError("fib: wrong result %d" % result)
    print(result)


main()

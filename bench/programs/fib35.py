# Fib35: naive doubly recursive Fibonacci; fib(35), computed once (issue 16's
# target measure).


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def main():
    result = fib(35)
    if result != 9227465:
        raise RuntimeError("fib35: wrong result %d" % result)
    print(result)


main()

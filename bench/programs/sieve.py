# Sieve (Are We Fast Yet): count the primes up to 5000 with the sieve of
# Eratosthenes.


def sieve(flags, size):
    prime_count = 0
    for i in range(2, size + 1):
        if flags[i - 1]:
            prime_count += 1
            k = i + i
            while k <= size:
                flags[k - 1] = False
                k += i
    return prime_count


def benchmark():
    size = 5000
    flags = [True] * size
    return sieve(flags, size)


def main():
    iterations = 3000
    total = 0
    for _ in range(iterations):
        result = benchmark()
        if result != 669:
            raise RuntimeError("sieve: wrong result %d" % result)
        total += result
    print(total)


main()

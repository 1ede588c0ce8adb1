# Permute (Are We Fast Yet): generate all permutations of a 6-element array by
# recursive swapping, counting the calls.

count = 0
v = None


def swap(i, j):
    tmp = v[i]
    v[i] = v[j]
    v[j] = tmp


def permute(n):
    global count
    count += 1
    if n != 0:
        n1 = n - 1
        permute(n1)
        for i in range(n1, -1, -1):
            swap(n1, i)
            permute(n1)
            swap(n1, i)


def benchmark():
    global count, v
    count = 0
    v = [0] * 6
    permute(6)
    return count


def main():
    iterations = 1000
    total = 0
    for _ in range(iterations):
        result = benchmark()
        if result != 8660:
            raise RuntimeError("permute: wrong result %d" % result)
        total += result
    print(total)


main()

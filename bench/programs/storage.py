# Storage (Are We Fast Yet): build a tree of arrays, four children per node,
# seven levels deep, with leaves of random length; count the allocated arrays.

seed = 74755
count = 0


def next_random():
    global seed
    seed = (seed * 1309 + 13849) % 65536
    return seed


def build_tree_depth(depth):
    global count
    count += 1
    if depth == 1:
        return [0] * (next_random() % 10 + 1)
    arr = [0] * 4
    for i in range(4):
        arr[i] = build_tree_depth(depth - 1)
    return arr


def benchmark():
    global seed, count
    seed = 74755
    count = 0
    build_tree_depth(7)
    return count


def main():
    iterations = 300
    total = 0
    for _ in range(iterations):
        result = benchmark()
        if result != 5461:
            raise RuntimeError("storage: wrong result %d" % result)
        total += result
    print(total)


main()

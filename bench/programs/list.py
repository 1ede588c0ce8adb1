# List (Are We Fast Yet): build linked lists and run the recursive Takeuchi-like
# `tail` function on them; the result is the length of the returned list.


def make_list(length):
    if length == 0:
        return None
    return {"val": length, "next": make_list(length - 1)}


def list_length(e):
    if e["next"] is None:
        return 1
    return 1 + list_length(e["next"])


def is_shorter_than(x, y):
    x_tail = x
    y_tail = y
    while y_tail is not None:
        if x_tail is None:
            return True
        x_tail = x_tail["next"]
        y_tail = y_tail["next"]
    return False


def tail(x, y, z):
    if is_shorter_than(y, x):
        return tail(tail(x["next"], y, z), tail(y["next"], z, x), tail(z["next"], x, y))
    return z


def benchmark():
    result = tail(make_list(15), make_list(10), make_list(6))
    return list_length(result)


def main():
    iterations = 1500
    total = 0
    for _ in range(iterations):
        result = benchmark()
        if result != 10:
            raise RuntimeError("list: wrong result %d" % result)
        total += result
    print(total)


main()

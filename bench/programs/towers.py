# Towers (Are We Fast Yet): solve the towers of Hanoi for 13 disks, the piles
# being linked lists of disks; count the moves.

piles = None
moves_done = 0


def push_disk(disk, pile):
    top = piles[pile]
    if top is not None and disk["size"] >= top["size"]:
        raise RuntimeError("Cannot put a big disk on a smaller one")
    disk["next"] = top
    piles[pile] = disk


def pop_disk_from(pile):
    top = piles[pile]
    if top is None:
        raise RuntimeError("Attempting to remove a disk from an empty pile")
    piles[pile] = top["next"]
    top["next"] = None
    return top


def move_top_disk(from_pile, to_pile):
    global moves_done
    push_disk(pop_disk_from(from_pile), to_pile)
    moves_done += 1


def build_tower_at(pile, disks):
    for i in range(disks, -1, -1):
        push_disk({"size": i, "next": None}, pile)


def move_disks(disks, from_pile, to_pile):
    if disks == 1:
        move_top_disk(from_pile, to_pile)
    else:
        other_pile = (3 - from_pile) - to_pile
        move_disks(disks - 1, from_pile, other_pile)
        move_top_disk(from_pile, to_pile)
        move_disks(disks - 1, other_pile, to_pile)


def benchmark():
    global piles, moves_done
    piles = [None, None, None]
    build_tower_at(0, 13)
    moves_done = 0
    move_disks(13, 0, 1)
    return moves_done


def main():
    iterations = 600
    total = 0
    for _ in range(iterations):
        result = benchmark()
        if result != 8191:
            raise RuntimeError("towers: wrong result %d" % result)
        total += result
    print(total)


main()

%% Towers (Are We Fast Yet): solve the towers of Hanoi for 13 disks, the piles
%% being linked lists of disks; count the moves. A pile is an Erlang list of disk
%% sizes (its cons cells are the linked list), the three piles a tuple updated with
%% setelement, threaded through the calls with the move count.
-module(towers).
-export([main/0]).

push_disk(Disk, Pile, Piles) ->
    case element(Pile, Piles) of
        [Top | _] when Disk >= Top -> erlang:error("Cannot put a big disk on a smaller one");
        Stack -> setelement(Pile, Piles, [Disk | Stack])
    end.

%% Returns {Disk, Piles}.
pop_disk_from(Pile, Piles) ->
    case element(Pile, Piles) of
        [] -> erlang:error("Attempting to remove a disk from an empty pile");
        [Top | Rest] -> {Top, setelement(Pile, Piles, Rest)}
    end.

%% Returns {Piles, Moves}.
move_top_disk(From, To, {Piles0, Moves}) ->
    {Disk, Piles} = pop_disk_from(From, Piles0),
    {push_disk(Disk, To, Piles), Moves + 1}.

build_tower_at(_Pile, -1, Piles) -> Piles;
build_tower_at(Pile, I, Piles) -> build_tower_at(Pile, I - 1, push_disk(I, Pile, Piles)).

move_disks(1, From, To, State) ->
    move_top_disk(From, To, State);
move_disks(Disks, From, To, State0) ->
    Other = (6 - From) - To,
    State1 = move_disks(Disks - 1, From, Other, State0),
    State2 = move_top_disk(From, To, State1),
    move_disks(Disks - 1, Other, To, State2).

benchmark() ->
    Piles = build_tower_at(1, 13, {[], [], []}),
    {_Piles, Moves} = move_disks(13, 1, 2, {Piles, 0}),
    Moves.

run(0, Total) -> Total;
run(I, Total) ->
    case benchmark() of
        8191 -> run(I - 1, Total + 8191);
        R -> erlang:error({towers, wrong_result, R})
    end.

main() ->
    io:format("~b~n", [run(600, 0)]).

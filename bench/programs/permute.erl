%% Permute (Are We Fast Yet): generate all permutations of a 6-element array by
%% recursive swapping, counting the calls. The array is a tuple, swapped with
%% setelement; the tuple and the count are threaded through the calls.
-module(permute).
-export([main/0]).

swap(I, J, V) ->
    Tmp = element(I, V),
    setelement(J, setelement(I, V, element(J, V)), Tmp).

%% Returns {V, Count}.
permute(0, V, Count) -> {V, Count + 1};
permute(N, V0, Count0) ->
    N1 = N - 1,
    {V, Count} = permute(N1, V0, Count0 + 1),
    swaps(N1, N1, V, Count).

%% for i = n1 down to 0: swap(n1, i); permute(n1); swap(n1, i)  (1-based elements)
swaps(_N1, -1, V, Count) -> {V, Count};
swaps(N1, I, V0, Count0) ->
    V1 = swap(N1 + 1, I + 1, V0),
    {V2, Count} = permute(N1, V1, Count0),
    swaps(N1, I - 1, swap(N1 + 1, I + 1, V2), Count).

benchmark() ->
    {_V, Count} = permute(6, {0, 0, 0, 0, 0, 0}, 0),
    Count.

run(0, Total) -> Total;
run(I, Total) ->
    case benchmark() of
        8660 -> run(I - 1, Total + 8660);
        R -> erlang:error({permute, wrong_result, R})
    end.

main() ->
    io:format("~b~n", [run(1000, 0)]).

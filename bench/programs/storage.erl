%% Storage (Are We Fast Yet): build a tree of arrays, four children per node,
%% seven levels deep, with leaves of random length; count the allocated arrays.
%% An array is a tuple (a leaf: erlang:make_tuple(N, 0)); the generator's seed and
%% the count are threaded through the calls.
-module(storage).
-export([main/0]).

%% AWFY's generator.
next_random(Seed) -> (Seed * 1309 + 13849) band 65535.

%% Returns {Tree, Seed, Count}.
build_tree_depth(1, Seed0, Count) ->
    Seed = next_random(Seed0),
    {erlang:make_tuple(Seed rem 10 + 1, 0), Seed, Count + 1};
build_tree_depth(Depth, Seed0, Count0) ->
    D = Depth - 1,
    {A, Seed1, Count1} = build_tree_depth(D, Seed0, Count0 + 1),
    {B, Seed2, Count2} = build_tree_depth(D, Seed1, Count1),
    {C, Seed3, Count3} = build_tree_depth(D, Seed2, Count2),
    {E, Seed4, Count4} = build_tree_depth(D, Seed3, Count3),
    {{A, B, C, E}, Seed4, Count4}.

benchmark() ->
    {_Tree, _Seed, Count} = build_tree_depth(7, 74755, 0),
    Count.

run(0, Total) -> Total;
run(I, Total) ->
    case benchmark() of
        5461 -> run(I - 1, Total + 5461);
        R -> erlang:error({storage, wrong_result, R})
    end.

main() ->
    io:format("~b~n", [run(300, 0)]).

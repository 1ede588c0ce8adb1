%% Queens (Are We Fast Yet): solve the eight queens problem by backtracking,
%% ten times per iteration; count the solved boards. The four boolean (and int)
%% arrays are tuples updated with setelement and threaded through the calls,
%% including the backtracking's explicit reset.
-module(queens).
-export([main/0]).

-record(board, {rows, maxs, mins, queens}).

get_row_column(R, C, #board{rows = Rows, maxs = Maxs, mins = Mins}) ->
    %% 0-based r and c, shifted by one for 1-based tuple elements
    element(R + 1, Rows) andalso element(C + R + 1, Maxs) andalso element(C - R + 8, Mins).

set_row_column(R, C, V, B = #board{rows = Rows, maxs = Maxs, mins = Mins}) ->
    B#board{rows = setelement(R + 1, Rows, V),
            maxs = setelement(C + R + 1, Maxs, V),
            mins = setelement(C - R + 8, Mins, V)}.

%% Returns {Solved, Board}.
place_queen(C, B) -> place_queen(0, C, B).

place_queen(8, _C, B) -> {false, B};
place_queen(R, C, B0) ->
    case get_row_column(R, C, B0) of
        false ->
            place_queen(R + 1, C, B0);
        true ->
            B1 = set_row_column(R, C, false, B0#board{queens = setelement(R + 1, B0#board.queens, C)}),
            if
                C =:= 7 ->
                    {true, B1};
                true ->
                    case place_queen(C + 1, B1) of
                        {true, B2} -> {true, B2};
                        {false, B2} -> place_queen(R + 1, C, set_row_column(R, C, true, B2))
                    end
            end
    end.

queens() ->
    B = #board{rows = erlang:make_tuple(8, true),
               maxs = erlang:make_tuple(16, true),
               mins = erlang:make_tuple(16, true),
               queens = erlang:make_tuple(8, -1)},
    {Solved, _} = place_queen(0, B),
    Solved.

benchmark(0, Solved) -> Solved;
benchmark(I, Solved) ->
    case queens() of
        true -> benchmark(I - 1, Solved + 1);
        false -> benchmark(I - 1, Solved)
    end.

run(0, Total) -> Total;
run(I, Total) ->
    case benchmark(10, 0) of
        10 -> run(I - 1, Total + 10);
        R -> erlang:error({queens, wrong_result, R})
    end.

main() ->
    io:format("~b~n", [run(1500, 0)]).
